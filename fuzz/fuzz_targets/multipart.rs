//! Multipart framing of an upload from arbitrary user input (SQL, a
//! parameter, placeholders, file names, MIME types, declared lengths):
//! refused with a typed error, or framed so that the boundary occurs
//! exactly at the part delimiters, never inside a part, and the declared
//! length is the body's.
#![no_main]

use kalam_proto::files::{boundary, multipart_plan};
use kalam_proto::{ConnectionOptions, FileLimits, QueryRequest, Segment, UploadFile, UploadRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{1}');
    let mut next = || fields.next().unwrap_or("").to_owned();
    let (sql, param, namespace) = (next(), next(), next());
    let mut query = QueryRequest::new(sql).param(param);
    if !namespace.is_empty() {
        query = query.with_namespace(namespace);
    }
    let mut files = Vec::new();
    for i in 0..3u64 {
        let (placeholder, filename, mime) = (next(), next(), next());
        if placeholder.is_empty() && i > 0 {
            break;
        }
        let len = data.get(i as usize).map_or(3, |b| u64::from(*b) << (b % 40));
        files.push(UploadFile {
            placeholder,
            filename,
            mime,
            len,
        });
    }
    let upload = UploadRequest {
        query,
        files,
        replayable: true,
        sources: 1,
    };
    let limits = FileLimits::from_options(&ConnectionOptions::default());
    let seed = data.iter().fold(7u64, |h, b| h.rotate_left(5) ^ u64::from(*b));
    let Ok(plan) = multipart_plan(&upload, &limits, seed, 1) else {
        return;
    };
    assert!(plan.boundary.starts_with("kalam-"));
    let _ = boundary(seed, 1);
    let mut framed = Vec::new();
    let mut file_bytes = 0u64;
    for s in &plan.segments {
        match s {
            Segment::Framed(b) => framed.extend_from_slice(b),
            Segment::File { len, .. } => file_bytes += len,
        }
    }
    assert_eq!(plan.content_length, framed.len() as u64 + file_bytes);
    assert_eq!(plan.file_bytes, file_bytes);
    let delimiter = format!("--{}", plan.boundary);
    let text_parts = 2 + usize::from(upload.query.namespace.is_some());
    let occurrences = framed
        .windows(delimiter.len())
        .filter(|w| *w == delimiter.as_bytes())
        .count();
    assert_eq!(
        occurrences,
        text_parts + upload.files.len() + 1,
        "the boundary occurs inside a part"
    );
    assert!(plan.content_type().ends_with(&plan.boundary));
});
