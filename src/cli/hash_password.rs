//! `antemx hash-password`: the argon2 hash of a password, for a `[[user]]`
//! `password_hash`. The password is read from standard input; on a terminal
//! it is not echoed and is asked twice.

use argh::FromArgs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(FromArgs)]
/// Print the argon2 hash of a password read from standard input, for
/// [[user]] password_hash.
#[argh(subcommand, name = "hash-password")]
pub struct HashPasswordArgs {
    /// config file (not read: the hash does not depend on it)
    #[argh(option, default = "super::default_config()")]
    config: PathBuf,
}

/// Turns the terminal's echo off (or back on) with stty; whether it could.
fn echo(on: bool) -> bool {
    Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(Stdio::inherit())
        .status()
        .is_ok_and(|status| status.success())
}

fn read_password(prompt: &str, terminal: bool) -> Result<String, String> {
    let mut line = String::new();
    if terminal {
        // A password shown on the screen is a password given away.
        if !echo(false) {
            return Err(
                "cannot turn the terminal's echo off (stty); pipe the password in instead".into(),
            );
        }
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let read = std::io::stdin().lock().read_line(&mut line);
    if terminal {
        echo(true);
        eprintln!();
    }
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}

/// The PHC string of `password` with a fresh random salt.
fn hash(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| "no random numbers from the system".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn run(args: HashPasswordArgs) -> i32 {
    let _unused = args.config;
    let terminal = std::io::stdin().is_terminal();
    let result = read_password("Password: ", terminal).and_then(|password| {
        if terminal && read_password("Again: ", terminal)? != password {
            return Err("the passwords differ".into());
        }
        hash(&password)
    });
    match result {
        Ok(hash) => {
            println!("{hash}");
            0
        }
        Err(e) => {
            eprintln!("antemx hash-password: {e}");
            1
        }
    }
}
