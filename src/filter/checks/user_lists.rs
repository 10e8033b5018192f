//! The recipients' own sender lists (`USER_ALLOWLISTED`, `USER_BLOCKLISTED`),
//! kept in the store ([`crate::filter::user_lists`]). One message gets one
//! verdict, so a recipient's list decides only for mail to that recipient
//! alone, or when every recipient of the message lists the sender the same
//! way: one user's allow list must not push spam into a colleague's inbox.

use crate::filter::user_lists::{Kind, Lists, UserLists};
use crate::filter::{Check, Force, Hit, Verdict};

pub struct UserListCheck {
    lists: UserLists,
}

impl UserListCheck {
    pub fn new(lists: UserLists) -> UserListCheck {
        UserListCheck { lists }
    }
}

impl Check for UserListCheck {
    fn envelope(&self, sender: Option<&str>, recipients: &[String]) -> Vec<Hit> {
        let Some(sender) = sender else {
            return Vec::new();
        };
        // Each recipient's lists, read once for both questions.
        let lists: Vec<Lists> = recipients.iter().map(|r| self.lists.get(r)).collect();
        let everyone = |kind| !lists.is_empty() && lists.iter().all(|l| l.has(kind, sender));
        let whose = match recipients {
            [one] => one.clone(),
            _ => "every recipient's".to_string(),
        };
        if everyone(Kind::Block) {
            vec![Hit::forcing(
                Force::AtLeast(Verdict::Reject),
                "USER_BLOCKLISTED",
                0.0,
                format!("sender {sender} is on {whose} block list"),
            )]
        } else if everyone(Kind::Allow) {
            vec![Hit::forcing(
                Force::Allow,
                "USER_ALLOWLISTED",
                0.0,
                format!("sender {sender} is on {whose} allow list"),
            )]
        } else {
            Vec::new()
        }
    }
}
