//! Reader for the legacy page payload: one LZ4 *frame* per page, as ltx
//! before v0.5.2 wrote it (Litestream 0.5.0 to 0.5.15). Only what such frames
//! need: no dictionaries, no skippable frames. The xxHash32 header, block and
//! content checksums are skipped, not verified: the LTX file checksum covers
//! the decompressed page anyway.

use std::io::Read;

use super::decoder::Src;
use super::LtxError;

const FRAME_MAGIC: u32 = 0x184D_2204;

/// Reads one whole frame from `src` and decompresses it into `out`, which it
/// must fill exactly.
pub(super) fn read_frame<R: Read>(
    src: &mut Src<R>,
    pgno: u32,
    out: &mut [u8],
) -> Result<(), LtxError> {
    let bad = |detail: String| LtxError::Decompress {
        pgno,
        detail: format!("legacy LZ4 frame: {detail}"),
    };
    const SECTION: &str = "legacy LZ4 page frame";

    let mut b4 = [0u8; 4];
    src.read_exact(&mut b4, SECTION)?;
    let magic = u32::from_le_bytes(b4);
    if magic != FRAME_MAGIC {
        return Err(bad(format!(
            "magic {magic:#010x}, expected {FRAME_MAGIC:#010x}"
        )));
    }
    let mut desc = [0u8; 2];
    src.read_exact(&mut desc, SECTION)?;
    let (flg, bd) = (desc[0], desc[1]);
    if flg >> 6 != 1 || flg & 0x02 != 0 {
        return Err(bad(format!(
            "descriptor flags {flg:#04x} (version must be 01, reserved bit 0)"
        )));
    }
    let independent = flg & 0x20 != 0;
    let block_checksums = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    if flg & 0x01 != 0 {
        return Err(bad("dictionary ids are not supported".into()));
    }
    let code = (bd >> 4) & 0x07;
    if bd & 0x8F != 0 || code < 4 {
        return Err(bad(format!("block descriptor {bd:#04x}")));
    }
    let block_max = (64usize * 1024) << (2 * (code - 4));
    if content_size {
        let mut b8 = [0u8; 8];
        src.read_exact(&mut b8, SECTION)?;
        let size = u64::from_le_bytes(b8);
        if size != out.len() as u64 {
            return Err(bad(format!(
                "content size {size}, expected the page size {}",
                out.len()
            )));
        }
    }
    let mut hc = [0u8; 1];
    src.read_exact(&mut hc, SECTION)?;

    let mut filled = 0usize;
    let mut block = Vec::new();
    loop {
        src.read_exact(&mut b4, SECTION)?;
        let word = u32::from_le_bytes(b4);
        if word == 0 {
            break; // end mark
        }
        let stored = word & 0x8000_0000 != 0;
        let len = (word & 0x7FFF_FFFF) as usize;
        if len > block_max {
            return Err(bad(format!(
                "block of {len} bytes exceeds the declared maximum {block_max}"
            )));
        }
        block.resize(len, 0);
        src.read_exact(&mut block, SECTION)?;
        if block_checksums {
            src.read_exact(&mut b4, SECTION)?;
        }
        let (done, rest) = out.split_at_mut(filled);
        let n = if stored {
            if len > rest.len() {
                return Err(bad(format!(
                    "decompresses past the page size {}",
                    done.len() + rest.len()
                )));
            }
            rest[..len].copy_from_slice(&block);
            len
        } else if independent {
            lz4_flex::block::decompress_into(&block, rest).map_err(|e| bad(e.to_string()))?
        } else {
            let dict = &done[done.len().saturating_sub(64 * 1024)..];
            lz4_flex::block::decompress_into_with_dict(&block, rest, dict)
                .map_err(|e| bad(e.to_string()))?
        };
        filled += n;
    }
    if content_checksum {
        src.read_exact(&mut b4, SECTION)?;
    }
    if filled != out.len() {
        return Err(bad(format!(
            "decompressed to {filled} bytes, expected the page size {}",
            out.len()
        )));
    }
    Ok(())
}
