"""Verifies a recorded Tidings delivery with independent implementations:
the reference Standard Webhooks verifier (PyPI `standardwebhooks`) and
Python's own hmac module for x-amebo-signature. Exits non-zero on failure.

usage: verify_webhook.py <recorded.json> <secret>
"""
import base64, hashlib, hmac, json, sys

import standardwebhooks

record = json.load(open(sys.argv[1]))
secret = sys.argv[2].encode()
body = base64.b64decode(record["body_b64"])
headers = record["headers"]

expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
assert hmac.compare_digest(expected, headers["x-amebo-signature"]), "x-amebo-signature mismatch"

# Both ways of giving the key: raw bytes, and whsec_ + base64.
standardwebhooks.Webhook(secret).verify(body, headers)
standardwebhooks.Webhook("whsec_" + base64.b64encode(secret).decode()).verify(body, headers)

tampered = body.replace(b"ann", b"bob")
assert tampered != body
try:
    standardwebhooks.Webhook(secret).verify(tampered, headers)
except standardwebhooks.webhooks.WebhookVerificationError:
    pass
else:
    raise SystemExit("a tampered body was accepted")
print("verified")
