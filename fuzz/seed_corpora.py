#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from ../shared/wire-samples/ (the real server's
recorded exchanges): HTTP answer bodies (with their status in front, as the
http_answers target reads it), WebSocket text frames and decoded binary
payloads, and the tokens found in them. Run from the repository root:
`python3 fuzz/seed_corpora.py ../shared/wire-samples`. The seeds are
committed; this is how they were made."""
import base64, hashlib, json, os, re, sys

src = sys.argv[1] if len(sys.argv) > 1 else "../shared/wire-samples"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

tokens = set()
for fname in sorted(os.listdir(src)):
    if not fname.endswith(".json"):
        continue
    doc = json.load(open(os.path.join(src, fname)))
    text = json.dumps(doc)
    tokens.update(re.findall(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", text))
    for ex in doc.get("exchanges", []):
        resp = ex.get("response", {})
        body = resp.get("body_raw")
        if isinstance(body, str):
            status = int(resp.get("status", 200))
            put("http_answers", status.to_bytes(2, "big") + b"\x00" + body.encode())
            put("http_answers", (status - 100).to_bytes(2, "big") + b"\x01" + body.encode())
    for fr in doc.get("frames", []):
        if fr.get("dir") == "recv" and fr.get("opcode") == "text" and "text" in fr:
            put("ws_frames", fr["text"].encode())
        if fr.get("dir") == "recv" and fr.get("opcode") == "binary" and "binary_b64" in fr:
            put("ws_frames", base64.b64decode(fr["binary_b64"]))
        if fr.get("dir") == "http":
            body = (fr.get("response") or {}).get("body_raw")
            if isinstance(body, str):
                put("http_answers", b"\x00\xc8\x00" + body.encode())
for t in sorted(tokens):
    put("jwt", t.encode())
# The targets that read structured input start from a few hand-made seeds.
put("multipart", "INSERT INTO d.f (id, f) VALUES (1, FILE(\"doc\"))\x01x\x01\x01doc\x01a.pdf\x01application/pdf".encode())
put("multipart", "SELECT 1\x01\x01ns\x01a\x01\"q\\\".txt\x01text/plain\x01b\x01b.bin\x01application/octet-stream".encode())
put("live_rows", bytes([0, 2, 2, 0, 1, 1, 7, 9, 2, 0, 0, 0, 3, 3, 1, 1, 4, 3, 2, 0, 5, 3, 0, 0]))
put("client_core", bytes([0, 0, 2, 0, 2, 0, 10, 1, 7, 1, 8, 0, 8, 3, 8, 4, 9, 0, 5, 0, 5, 0, 7, 1, 8, 0, 1, 0, 2, 4]))
