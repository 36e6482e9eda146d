//! The text port's line codec: lines ended by `\n`, bounded in length.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Splits a byte stream into lines ended by `\n`, without their trailing
/// `\r`s (all of them, as Workerman's `Text::decode` did with
/// `rtrim($buffer, "\r\n")`), each at most `max` bytes. The bytes before a
/// `\n` may be `max` plus one `\r`; a line longer than that is an error as
/// soon as those bytes arrive without a line end, so a line that never ends
/// cannot grow the buffer. Bytes after the last line end at EOF are not a line
/// (the Workerman text protocol waited for the `\n` too).
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Where the search for `\n` resumes, so a slowly arriving line is not
    /// rescanned from the start on every read.
    scanned: usize,
}

/// Why the line decoder stopped.
#[derive(Debug, thiserror::Error)]
pub enum LineCodecError {
    /// A line exceeded the maximum length.
    #[error("line longer than the limit")]
    TooLong,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl LineCodec {
    /// A decoder for lines of at most `max` bytes (line end excluded).
    pub fn new(max: usize) -> LineCodec {
        LineCodec { max, scanned: 0 }
    }
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = LineCodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineCodecError> {
        // A line of `max` bytes plus `\r\n` is still acceptable. `max` is
        // `--max-line-bytes`, which may be as large as `usize::MAX`.
        let window = buf.len().min(self.max.saturating_add(2));
        match buf[self.scanned.min(window)..window]
            .iter()
            .position(|&b| b == b'\n')
        {
            Some(pos) => {
                let end = self.scanned.min(window) + pos;
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                // Workerman's Text protocol `rtrim`s "\r\n": every trailing
                // CR goes, before routing and before delivery.
                let kept = line[..end]
                    .iter()
                    .rposition(|&b| b != b'\r')
                    .map_or(0, |last| last + 1);
                line.truncate(kept);
                if line.len() > self.max {
                    return Err(LineCodecError::TooLong);
                }
                Ok(Some(line.freeze()))
            }
            None if buf.len() > self.max.saturating_add(1) => Err(LineCodecError::TooLong),
            None => {
                self.scanned = window;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineCodecError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                buf.clear();
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(max: usize, input: &[u8]) -> (Vec<Vec<u8>>, bool) {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(l)) => out.push(l.to_vec()),
                Ok(None) => return (out, false),
                Err(_) => return (out, true),
            }
        }
    }

    #[test]
    fn splits_on_lf_and_crlf() {
        let (lines, err) = decode_all(100, b"a\nb\r\n\nd\r\r\n\r\ne\rf\r \r\nc");
        assert_eq!(
            lines,
            vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"".to_vec(),
                b"d".to_vec(),
                b"".to_vec(),
                b"e\rf\r ".to_vec()
            ]
        );
        assert!(
            !err,
            "a trailing partial line is not an error, and not a line"
        );
    }

    #[test]
    fn the_limit_applies_without_the_line_end() {
        assert_eq!(decode_all(3, b"abc\r\n").0, vec![b"abc".to_vec()]);
        assert!(decode_all(3, b"abcd\n").1);
        assert!(
            decode_all(3, b"abcde").1,
            "an endless line errors at the limit"
        );
    }

    #[test]
    fn lines_arriving_byte_by_byte() {
        let mut codec = LineCodec::new(10);
        let mut buf = BytesMut::new();
        for &b in b"hello\r" {
            buf.extend_from_slice(&[b]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        buf.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"hello"[..]);
    }
}
