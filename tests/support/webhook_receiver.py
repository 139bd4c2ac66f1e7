"""A webhook receiver that checks every request with LiveKit's own WebhookReceiver (Python SDK),
the API key and secret from LIVEKIT_API_KEY / LIVEKIT_API_SECRET. It answers the first request
with 503 (to make the sender retry), then 200. Each request appends one JSON line to OUT_FILE:
{"refused": true} for the first, else the verified WebhookEvent (protobuf JSON, proto names),
or {"error": ...} if verification failed.

usage: webhook_receiver.py PORT OUT_FILE
"""
import json
import sys

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from livekit import api

port, out = int(sys.argv[1]), sys.argv[2]
receiver = api.WebhookReceiver(api.TokenVerifier())
seen = 0


def log(line):
    with open(out, "a") as f:
        f.write(json.dumps(line) + "\n")


async def hook(request):
    global seen
    seen += 1
    body = await request.text()
    if seen == 1:
        log({"refused": True})
        return web.Response(status=503)
    try:
        event = receiver.receive(body, request.headers.get("Authorization", ""))
    except Exception as e:  # noqa: BLE001 - any failure is reported to the test
        log({"error": str(e), "content_type": request.headers.get("Content-Type")})
        return web.Response(status=401)
    line = MessageToDict(
        event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    line["content_type"] = request.headers.get("Content-Type")
    log(line)
    return web.Response(text="ok")


app = web.Application()
app.router.add_post("/hook", hook)
web.run_app(app, host="127.0.0.1", port=port, print=None)
