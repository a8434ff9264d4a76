//! gzip (RFC 1952) unwrapping for compressed WebSocket frames.
//!
//! With the `gzip` feature the deflate stream is inflated by `miniz_oxide`
//! (pure Rust). Without it, a gzip frame is a typed decode error; the
//! adapters then ask the server for uncompressed frames (`?compress=false`).

/// Whether this build can read gzip frames.
pub const SUPPORTED: bool = cfg!(feature = "gzip");

/// Inflates a gzip member, refusing output over `limit` bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let body = strip_header(data)?;
    inflate(body, limit)
}

fn strip_header(data: &[u8]) -> Result<&[u8], String> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return Err("not a gzip member".into());
    }
    let flags = data[3];
    let mut pos = 10usize;
    let short = || "truncated gzip header".to_string();
    if flags & FEXTRA != 0 {
        let len = data.get(pos..pos + 2).ok_or_else(short)?;
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = data.get(pos..).ok_or_else(short)?;
            let end = rest.iter().position(|&b| b == 0).ok_or_else(short)?;
            pos += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    // The deflate stream, without the 8-byte CRC32 + ISIZE trailer.
    let end = data.len().checked_sub(8).ok_or_else(short)?;
    data.get(pos..end).ok_or_else(short)
}

#[cfg(feature = "gzip")]
fn inflate(deflate: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    miniz_oxide::inflate::decompress_to_vec_with_limit(deflate, limit).map_err(|e| format!("inflate failed: {e:?}"))
}

#[cfg(not(feature = "gzip"))]
fn inflate(_deflate: &[u8], _limit: usize) -> Result<Vec<u8>, String> {
    Err("gzip frame received but kalam-proto was built without the `gzip` feature".into())
}

#[cfg(all(test, feature = "gzip"))]
mod tests {
    use super::*;

    #[test]
    fn inflates_python_gzip() {
        // gzip.compress(b'{"type":"auth_error","message":"x"}') with mtime=0.
        let member: &[u8] = &[
            0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xab, 0x56, 0x2a, 0xa9, 0x2c, 0x48, 0x55, 0xb2,
            0x52, 0x4a, 0x2c, 0x2d, 0xc9, 0x88, 0x4f, 0x2d, 0x2a, 0xca, 0x2f, 0x52, 0xd2, 0x51, 0xca, 0x4d, 0x2d, 0x2e,
            0x4e, 0x4c, 0x07, 0x09, 0x57, 0x28, 0xd5, 0x02, 0x00, 0x92, 0x42, 0xd7, 0x56, 0x23, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            gunzip(member, 1 << 20).unwrap(),
            br#"{"type":"auth_error","message":"x"}"#
        );
        assert!(gunzip(member, 4).is_err());
        assert!(gunzip(&member[..20], 1 << 20).is_err());
    }
}
