"""The hub client's requests and the fields it reads, checked against the server's /openapi.json:
a field the server renamed or made required fails here before it fails a user."""

import json
import unittest
import urllib.request

from tidings_client.hub import REQUEST_FIELDS, RESPONSE_FIELDS

from support import URL  # noqa: E402 (run with: unittest discover -s tests)


class AgreesWithTheServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with urllib.request.urlopen(URL + "/openapi.json", timeout=10) as answer:
            cls.schemas = json.load(answer)["components"]["schemas"]

    def test_every_request_field_is_known_and_every_required_one_is_sent(self):
        for name, fields in REQUEST_FIELDS.items():
            with self.subTest(schema=name):
                schema = self.schemas[name]
                known = set(schema.get("properties", {}))
                self.assertLessEqual(set(fields), known, f"{name}: fields the server does not know")
                required = set(schema.get("required", []))
                self.assertLessEqual(required, set(fields), f"{name}: required fields the client cannot send")

    def test_every_field_read_from_an_answer_is_always_there(self):
        for name, fields in RESPONSE_FIELDS.items():
            with self.subTest(schema=name):
                required = set(self.schemas[name].get("required", []))
                self.assertLessEqual(set(fields), required, f"{name}: fields read that may be missing")

    def test_a_renamed_field_would_be_caught(self):
        # The check itself, on a copy of a schema with a field renamed and one made required.
        schema = json.loads(json.dumps(self.schemas["NewEvent"]))
        schema["properties"]["dedup_key"] = schema["properties"].pop("deduper")
        schema["required"].append("dedup_key")
        self.assertFalse(set(REQUEST_FIELDS["NewEvent"]) <= set(schema["properties"]))
        self.assertFalse(set(schema["required"]) <= set(REQUEST_FIELDS["NewEvent"]))


if __name__ == "__main__":
    unittest.main()
