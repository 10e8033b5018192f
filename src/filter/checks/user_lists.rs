//! The recipients' own sender lists (`USER_ALLOWLISTED`, `USER_BLOCKLISTED`),
//! kept in the store ([`crate::filter::user_lists`]). One message gets one
//! verdict, so a recipient's list decides only for mail to that recipient
//! alone, or when every recipient of the message lists the sender the same
//! way: one user's allow list must not push spam into a colleague's inbox.

use crate::filter::user_lists::{Kind, UserLists};
use crate::filter::{Check, Force, Hit, Verdict};

pub struct UserListCheck {
    lists: UserLists,
}

impl UserListCheck {
    pub fn new(lists: UserLists) -> UserListCheck {
        UserListCheck { lists }
    }

    fn everyone(&self, recipients: &[String], kind: Kind, sender: &str) -> bool {
        !recipients.is_empty() && recipients.iter().all(|r| self.lists.lists(r, kind, sender))
    }
}

impl Check for UserListCheck {
    fn envelope(&self, sender: Option<&str>, recipients: &[String]) -> Vec<Hit> {
        let Some(sender) = sender else {
            return Vec::new();
        };
        let whose = match recipients {
            [one] => one.clone(),
            _ => "every recipient's".to_string(),
        };
        if self.everyone(recipients, Kind::Block, sender) {
            vec![Hit::forcing(
                Force::AtLeast(Verdict::Reject),
                "USER_BLOCKLISTED",
                0.0,
                format!("sender {sender} is on {whose} block list"),
            )]
        } else if self.everyone(recipients, Kind::Allow, sender) {
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
