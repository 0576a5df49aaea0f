"""Calls `runner serve` through the official OpenAI Python client and prints, as JSON, what it got back.

    openai_client.py BASE_URL API_KEY MODEL TEXTS_JSON

Run by tests/serve.rs, which compares the embeddings with `runner embed`'s.
"""

import array
import base64
import json
import sys

import openai

base_url, api_key, model, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def create(**kwargs):
    return client.embeddings.create(model=model, **kwargs)


floats = create(input=texts, encoding_format="float")
# Without encoding_format the client asks for base64 and decodes it itself.
default = create(input=texts)
raw = create(input=texts, encoding_format="base64")
assert all(isinstance(d.embedding, str) for d in raw.data), "encoding_format=base64 must give strings"
base64_decoded = [array.array("f", base64.b64decode(d.embedding)).tolist() for d in raw.data]
assert [d.index for d in floats.data] == list(range(len(texts)))


def failure(call):
    try:
        call()
    except openai.APIStatusError as e:
        return {"status": e.status_code, "code": e.code, "message": e.message, "type": e.type}
    raise AssertionError("the call should have failed")


wrong_key = openai.OpenAI(base_url=base_url, api_key="not-" + api_key, max_retries=0)
print(
    json.dumps(
        {
            "float": [d.embedding for d in floats.data],
            "default": [d.embedding for d in default.data],
            "base64_decoded": base64_decoded,
            "single": create(input=texts[0], encoding_format="float").data[0].embedding,
            "dimensions_64": create(input=texts[0], dimensions=64, encoding_format="float").data[0].embedding,
            "usage": floats.usage.model_dump(),
            "model": floats.model,
            "errors": {
                "empty": failure(lambda: create(input=[])),
                "wrong_key": failure(lambda: wrong_key.embeddings.create(model=model, input="x")),
                "wrong_model": failure(lambda: client.embeddings.create(model="not-" + model, input="x")),
            },
        }
    )
)
