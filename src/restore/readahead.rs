//! Read-ahead for files restore streams straight from storage (the snapshot, and any file too
//! large to buffer): a thread keeps downloading up to `CHUNKS` × `CHUNK` bytes ahead of the
//! decoder, so the network transfer overlaps LZ4 decoding, checksums and writes instead of
//! alternating with them. Owns only that bounded buffer; never reorders or alters bytes.

use std::io::{self, Read};

use crossbeam_channel::{bounded, Receiver};

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 8;

pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

/// Starts reading `r` on its own thread. The thread ends at end of file, on an error (passed
/// on to the reader), or when the `ReadAhead` is dropped (after its current read).
pub fn read_ahead(mut r: Box<dyn Read + Send>) -> ReadAhead {
    let (tx, rx) = bounded(CHUNKS);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        buf.truncate(n);
        // An empty chunk is the end of the file.
        if tx.send(Ok(buf)).is_err() || n == 0 {
            return;
        }
    });
    ReadAhead {
        rx,
        cur: Vec::new(),
        pos: 0,
        eof: false,
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.eof = chunk.is_empty();
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("the download thread stopped")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_byte_in_order_and_errors_through() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut got = Vec::new();
        read_ahead(Box::new(io::Cursor::new(data.clone())))
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, data);

        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }
        let err = read_ahead(Box::new(Failing))
            .read_to_end(&mut got)
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"));
    }
}
