//! gzip request bodies (`Content-Encoding: gzip`), decompressed under a size limit.

use std::io::Read;

use flate2::bufread::MultiGzDecoder;

use crate::error::{IngestError, Result};

/// Decompresses a gzip body (one or more concatenated members), failing with
/// [`IngestError::TooLarge`] as soon as the output would exceed `limit` bytes, so that a
/// small "gzip bomb" cannot make the server allocate more than `limit`.
///
/// A corrupt or truncated stream is [`IngestError::BadGzip`], with the compressed offset at
/// which the decoder stopped (approximate: the decoder reads ahead within its buffer). An
/// empty body decompresses to an empty body.
///
/// ```
/// use std::io::Write;
/// use rigwatch_ingest::{gzip, IngestError};
/// let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
/// enc.write_all(b"cpu f=1\n").unwrap();
/// let body = enc.finish().unwrap();
/// assert_eq!(gzip::decompress(&body, 100).unwrap(), b"cpu f=1\n");
/// assert!(matches!(gzip::decompress(&body, 4), Err(IngestError::TooLarge { limit: 4 })));
/// ```
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Err(IngestError::BadGzip {
            offset: 0,
            message: "not a gzip stream (it must start with the bytes 1f 8b)".into(),
        });
    }
    let mut input = body;
    let mut decoder = MultiGzDecoder::new(&mut input);
    // Start small: the declared size of a request is not trusted.
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit).min(1 << 20));
    let max = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let result = (&mut decoder).take(max).read_to_end(&mut out);
    drop(decoder);
    if let Err(e) = result {
        return Err(IngestError::BadGzip {
            offset: body.len() - input.len(),
            message: e.to_string(),
        });
    }
    if out.len() > limit {
        return Err(IngestError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rigwatch_common::http_error::HttpError;

    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn round_trip_and_members() {
        let data = b"gpu,gpu_uuid=GPU-1 utilization=97\n".repeat(1000);
        assert_eq!(decompress(&gz(&data), data.len()).unwrap(), data);
        let mut two = gz(b"a f=1\n");
        two.extend(gz(b"b f=2\n"));
        assert_eq!(decompress(&two, 100).unwrap(), b"a f=1\nb f=2\n");
        assert_eq!(decompress(&gz(b""), 0).unwrap(), b"");
        assert_eq!(decompress(b"", 0).unwrap(), b"");
    }

    #[test]
    fn stops_at_limit() {
        // 64 MiB of zeros compress to about 64 KiB; the limit stops the decoder early.
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let err = decompress(&bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { limit } if limit == 1 << 20));
        assert_eq!(err.status_code().as_u16(), 413);
    }

    #[test]
    fn bad_streams() {
        let err = decompress(b"cpu f=1\n", 100).unwrap_err();
        assert!(
            matches!(err, IngestError::BadGzip { offset: 0, .. }),
            "{err}"
        );
        assert_eq!(err.status_code().as_u16(), 400);
        assert_eq!(
            err.to_string(),
            "invalid gzip stream near compressed byte 0: \
             not a gzip stream (it must start with the bytes 1f 8b)"
        );
        // The magic alone, then nothing.
        let err = decompress(b"\x1f\x8b", 100).unwrap_err();
        assert!(matches!(err, IngestError::BadGzip { .. }), "{err}");

        let good = gz(&b"x".repeat(10_000));
        let truncated = &good[..good.len() - 10];
        let err = decompress(truncated, 1 << 20).unwrap_err();
        let IngestError::BadGzip { offset, message } = &err else {
            panic!("{err}");
        };
        assert!(*offset <= truncated.len());
        assert!(!message.is_empty());
        assert!(
            err.to_string()
                .starts_with("invalid gzip stream near compressed byte")
        );

        // A valid header followed by a corrupt deflate stream.
        let mut corrupt = gz(&b"y".repeat(1000));
        corrupt[10] = 0xff;
        let err = decompress(&corrupt, 1 << 20).unwrap_err();
        assert!(matches!(err, IngestError::BadGzip { .. }), "{err}");
    }
}
