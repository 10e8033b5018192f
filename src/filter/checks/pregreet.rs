//! A client that talks before the banner (`PREGREET`): SMTP says the server
//! speaks first, and real mail servers wait for it; spam bots fire their
//! commands at once to save time. Seen only when `[smtp] greet_pause`
//! holds the banner back for a moment.

use crate::filter::{Check, Connect, Hit};

const SCORE: f64 = 3.0;

pub struct Pregreet;

impl Check for Pregreet {
    fn connect(&self, connect: &Connect) -> Vec<Hit> {
        if connect.pregreet {
            vec![Hit::new(
                "PREGREET",
                SCORE,
                "the client sent commands before the greeting",
            )]
        } else {
            Vec::new()
        }
    }
}
