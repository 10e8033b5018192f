//! The file names inside an attachment that is an archive, read from the
//! archive's own directory without decompressing anything: ZIP (central
//! directory), RAR 4 and 5 (file headers) and tar. 7-Zip keeps its
//! directory compressed and is not looked into.

/// Names read from one archive: a crafted directory must not cost more.
const MAX_ENTRIES: usize = 1000;

/// The names in an archive; `None` when the bytes are not one of the
/// formats above.
pub fn entry_names(bytes: &[u8]) -> Option<Vec<String>> {
    if bytes.starts_with(b"PK\x03\x04") {
        Some(zip(bytes))
    } else if let Some(rest) = bytes.strip_prefix(b"Rar!\x1a\x07\x01\x00") {
        Some(rar5(rest))
    } else if bytes.starts_with(b"Rar!\x1a\x07\x00") {
        Some(rar4(bytes))
    } else if bytes.get(257..262) == Some(b"ustar") {
        Some(tar(bytes))
    } else {
        None
    }
}

fn text(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn u16_le(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]) as usize)
}

fn u32_le(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// ZIP: every central directory record (`PK\x01\x02`) names one entry;
/// an encrypted archive shows its names too.
fn zip(bytes: &[u8]) -> Vec<String> {
    memchr::memmem::find_iter(bytes, b"PK\x01\x02")
        .take(MAX_ENTRIES)
        .filter_map(|at| {
            let length = u16_le(bytes, at + 28)?;
            bytes.get(at + 46..at + 46 + length).map(text)
        })
        .collect()
}

/// RAR 4: blocks of `crc(2) type(1) flags(2) size(2)`; a file block (type
/// 0x74) has its name at 32 (40 with 64-bit sizes) and its packed data
/// after the header.
fn rar4(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 7;
    while names.len() < MAX_ENTRIES {
        let (Some(&kind), Some(flags), Some(size)) = (
            bytes.get(at + 2),
            u16_le(bytes, at + 3),
            u16_le(bytes, at + 5),
        ) else {
            break;
        };
        let mut data = 0;
        if kind == 0x74 {
            let name_at = if flags & 0x100 != 0 { 40 } else { 32 };
            let (Some(packed), Some(length)) = (u32_le(bytes, at + 7), u16_le(bytes, at + 26))
            else {
                break;
            };
            if let Some(name) = bytes.get(at + name_at..at + name_at + length) {
                // Unicode names follow the ASCII one after a NUL.
                let ascii = name.split(|&b| b == 0).next().unwrap_or(name);
                names.push(text(ascii));
            }
            data = packed;
        } else if flags & 0x8000 != 0 {
            data = u32_le(bytes, at + 7).unwrap_or(0);
        }
        if size < 7 {
            break;
        }
        at += size + data;
    }
    names
}

/// RAR 5 variable-length integer: 7 bits a byte, low first.
fn vint(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let mut value: usize = 0;
    for shift in (0..63).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// RAR 5: headers of `crc(4) size(vint)` then the header body; a file
/// header (type 2) ends with its name. Encrypted headers cannot be read.
fn rar5(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0;
    while names.len() < MAX_ENTRIES {
        let mut p = at + 4;
        let Some(size) = vint(bytes, &mut p) else {
            break;
        };
        let body_end = p + size;
        let header = || -> Option<(usize, Option<String>)> {
            let mut q = p;
            let kind = vint(bytes, &mut q)?;
            let flags = vint(bytes, &mut q)?;
            if flags & 0x1 != 0 {
                vint(bytes, &mut q)?;
            }
            let data = if flags & 0x2 != 0 {
                vint(bytes, &mut q)?
            } else {
                0
            };
            if kind != 2 {
                return Some((data, None));
            }
            let file_flags = vint(bytes, &mut q)?;
            vint(bytes, &mut q)?; // unpacked size
            vint(bytes, &mut q)?; // attributes
            if file_flags & 0x2 != 0 {
                q += 4; // modification time
            }
            if file_flags & 0x4 != 0 {
                q += 4; // data CRC32
            }
            vint(bytes, &mut q)?; // compression
            vint(bytes, &mut q)?; // host OS
            let length = vint(bytes, &mut q)?;
            let name = bytes.get(q..q + length)?;
            Some((data, Some(text(name))))
        };
        let Some((data, name)) = header() else {
            break;
        };
        names.extend(name);
        if body_end <= at {
            break;
        }
        at = body_end + data;
    }
    names
}

/// tar: 512-byte headers, the name in the first 100 bytes, the size in
/// octal at 124, the data padded to 512.
fn tar(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0;
    while names.len() < MAX_ENTRIES {
        let Some(header) = bytes.get(at..at + 512) else {
            break;
        };
        if header[0] == 0 {
            break;
        }
        let name = header[..100].split(|&b| b == 0).next().unwrap_or(&[]);
        names.push(text(name));
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .and_then(|s| {
                usize::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()
            })
            .unwrap_or(0);
        at += 512 + size.div_ceil(512) * 512;
    }
    names
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A stored (uncompressed) ZIP with one entry, as `zip -0` writes it.
    pub fn zip_with(entry: &str) -> Vec<u8> {
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&[0; 22]);
        zip.extend_from_slice(&(entry.len() as u16).to_le_bytes());
        zip.extend_from_slice(&[0, 0]);
        zip.extend_from_slice(entry.as_bytes());
        let mut central = b"PK\x01\x02".to_vec();
        central.extend_from_slice(&[0; 24]);
        central.extend_from_slice(&(entry.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 16]);
        central.extend_from_slice(entry.as_bytes());
        zip.extend_from_slice(&central);
        zip
    }

    /// A RAR 4 archive: marker block, main header, one stored file.
    fn rar4_with(entry: &str, data: &[u8]) -> Vec<u8> {
        let mut rar = b"Rar!\x1a\x07\x00".to_vec();
        rar.extend_from_slice(&[0, 0, 0x73, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0]);
        let size = 32 + entry.len();
        rar.extend_from_slice(&[0, 0, 0x74, 0, 0x80]);
        rar.extend_from_slice(&(size as u16).to_le_bytes());
        rar.extend_from_slice(&(data.len() as u32).to_le_bytes());
        rar.extend_from_slice(&(data.len() as u32).to_le_bytes());
        rar.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0x30]);
        rar.extend_from_slice(&(entry.len() as u16).to_le_bytes());
        rar.extend_from_slice(&[0x20, 0, 0, 0]);
        rar.extend_from_slice(entry.as_bytes());
        rar.extend_from_slice(data);
        rar
    }

    /// A RAR 5 archive: main header, then two files with data areas.
    fn rar5_with(entries: &[&str]) -> Vec<u8> {
        let mut rar = b"Rar!\x1a\x07\x01\x00".to_vec();
        // Main archive header: type 1, no flags, archive flags 0.
        rar.extend_from_slice(&[0, 0, 0, 0, 3, 1, 0, 0]);
        for entry in entries {
            let mut body = vec![2, 0x02, 5]; // type 2, has data (5 bytes)
            body.extend_from_slice(&[0, 5, 0x20, 0, 0]); // flags, size, attrs, compression, OS
            body.push(entry.len() as u8);
            body.extend_from_slice(entry.as_bytes());
            rar.extend_from_slice(&[0, 0, 0, 0, body.len() as u8]);
            rar.extend_from_slice(&body);
            rar.extend_from_slice(b"hello");
        }
        rar
    }

    fn tar_with(entries: &[(&str, usize)]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (name, size) in entries {
            let mut header = vec![0u8; 512];
            header[..name.len()].copy_from_slice(name.as_bytes());
            let octal = format!("{size:011o}\0");
            header[124..136].copy_from_slice(octal.as_bytes());
            header[257..262].copy_from_slice(b"ustar");
            tar.extend_from_slice(&header);
            tar.extend(std::iter::repeat_n(b'x', size.div_ceil(512) * 512));
        }
        tar.extend_from_slice(&[0; 1024]);
        tar
    }

    #[test]
    fn names_are_read_from_each_format() {
        assert_eq!(entry_names(&zip_with("a.pdf.scr")).unwrap(), ["a.pdf.scr"]);
        assert_eq!(
            entry_names(&rar4_with("invoice.exe", b"MZ...")).unwrap(),
            ["invoice.exe"]
        );
        assert_eq!(
            entry_names(&rar5_with(&["readme.txt", "setup.js"])).unwrap(),
            ["readme.txt", "setup.js"]
        );
        assert_eq!(
            entry_names(&tar_with(&[("docs/a.txt", 700), ("run.vbs", 3)])).unwrap(),
            ["docs/a.txt", "run.vbs"]
        );
    }

    #[test]
    fn other_bytes_are_not_archives_and_broken_ones_do_not_panic() {
        assert!(entry_names(b"%PDF-1.7").is_none());
        for broken in [
            &b"PK\x03\x04PK\x01\x02"[..],
            b"Rar!\x1a\x07\x00\x00\x00\x74",
            b"Rar!\x1a\x07\x01\x00\xff\xff\xff\xff\xff",
        ] {
            let _ = entry_names(broken);
        }
        let mut truncated = rar5_with(&["a.exe"]);
        truncated.truncate(truncated.len() - 8);
        let _ = entry_names(&truncated);
    }
}
