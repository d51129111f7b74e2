"""Verifies a recorded Tidings delivery with independent implementations:
the reference Standard Webhooks verifier (PyPI `standardwebhooks`) and
Python's own hmac module for x-amebo-signature. Exits non-zero on failure.

usage: verify_webhook.py <job.json>

The job holds the delivery (`headers`, `body_b64`) and what to expect:
`accept`: signing keys the verifier must accept; `reject`: keys it must
refuse; `amebo`: the secret of x-amebo-signature (or null: no such header);
`amebo_previous`: the secret of x-amebo-signature-previous (or null: none).
"""
import base64, hashlib, hmac, json, sys

import standardwebhooks

job = json.load(open(sys.argv[1]))
body = base64.b64decode(job["body_b64"])
headers = job["headers"]


def amebo_check(header, secret):
    if secret is None:
        assert header not in headers, f"unexpected {header}"
        return
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers[header]), f"{header} mismatch"


amebo_check("x-amebo-signature", job.get("amebo"))
amebo_check("x-amebo-signature-previous", job.get("amebo_previous"))


def accepts(key, data):
    try:
        standardwebhooks.Webhook(key).verify(data, headers)
        return True
    except standardwebhooks.webhooks.WebhookVerificationError:
        return False


for key in job["accept"]:
    assert accepts(key, body), f"the verifier refused key {key[:10]}..."
    tampered = body.replace(b"ann", b"bob")
    assert tampered != body
    assert not accepts(key, tampered), "a tampered body was accepted"
for key in job.get("reject", []):
    assert not accepts(key, body), f"the verifier accepted key {key[:10]}..."
print("verified")
