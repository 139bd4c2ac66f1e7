"""LiveKit's own Python server SDK (livekit-api, from the project's venv) as a client of
pagecast's Egress API. The server's URL, API key and secret come from LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET (never the command line). Each command prints one JSON
line: the EgressInfo / ListEgressResponse as protobuf JSON with proto field names, or
{"error": CODE, "msg": ..., "status": HTTP} when the server answers with a Twirp error.

usage: egress.py start-web PAGE FILEPATH WIDTH HEIGHT [RTMP_URL] [--hls DIR] [--images DIR]
                                  [--webhook URL [--signing-key KEY]] (the request's own webhook,
                                  signed with KEY, default LIVEKIT_API_KEY; without egress_updated
                                  when --no-updates)
       egress.py start-web-s3 PAGE KEY WIDTH HEIGHT [--hls DIR]   (to bucket "recordings" at
                                  S3_ENDPOINT, with S3_ACCESS_KEY and S3_SECRET; the segment
                                  output, if any, with a live playlist live.m3u8, uploaded there too)
       egress.py start-room ROOM LAYOUT FILEPATH WIDTH HEIGHT
       egress.py start-participant ROOM IDENTITY FILEPATH WIDTH HEIGHT
       egress.py start-tracks ROOM FILEPATH WIDTH HEIGHT VIDEO_TRACK_SID AUDIO_TRACK_SID
       egress.py list [--room R] [--id ID] [--active]
       egress.py stop EGRESS_ID
       egress.py update-stream EGRESS_ID [--add URL]... [--remove URL]...
       egress.py update-layout EGRESS_ID LAYOUT
       egress.py tokens          (ListEgress with a wrong secret, an expired token, a token
                                  without roomRecord, a good one, and a good one as JSON:
                                  {"wrong_secret": CODE, "expired": CODE, "no_grant": CODE,
                                   "good": "ok", "json": HTTP status})
"""
import asyncio
import datetime
import json
import os
import sys

import aiohttp
from google.protobuf.json_format import MessageToDict
from livekit import api
from livekit.api.twirp_client import ServerError


def a_file(filepath, width, height):
    """A room request's one file output at WIDTHxHEIGHT, 30 fps (its keyword arguments)."""
    return {
        "file_outputs": [api.EncodedFileOutput(filepath=filepath)],
        "advanced": api.EncodingOptions(width=int(width), height=int(height), framerate=30),
    }


def dump(message):
    print(json.dumps(MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )))


async def main():
    command, *args = sys.argv[1:]
    url = os.environ["LIVEKIT_URL"]
    key = os.environ["LIVEKIT_API_KEY"]
    secret = os.environ["LIVEKIT_API_SECRET"]
    async with api.LiveKitAPI(url, key, secret) as lk:
        try:
            if command == "start-web":
                page, filepath, width, height, *rest = args
                rtmp, hls, images, hooks = [], None, None, []
                it = iter(rest)
                for a in it:
                    if a == "--hls":
                        hls = next(it)
                    elif a == "--images":
                        images = next(it)
                    elif a == "--webhook":
                        hooks.append(api.WebhookConfig(url=next(it), signing_key=key))
                    elif a == "--signing-key":
                        hooks[-1].signing_key = next(it)
                    elif a == "--no-updates":
                        hooks[-1].filter_params.exclude_events.append("egress_updated")
                    else:
                        rtmp.append(a)
                req = api.WebEgressRequest(
                    url=page,
                    file_outputs=[api.EncodedFileOutput(filepath=filepath)],
                    stream_outputs=[api.StreamOutput(protocol=api.StreamProtocol.RTMP, urls=rtmp)]
                    if rtmp
                    else [],
                    segment_outputs=[
                        api.SegmentedFileOutput(filename_prefix=hls, segment_duration=2)
                    ]
                    if hls
                    else [],
                    image_outputs=[
                        api.ImageOutput(
                            capture_interval=1, width=320, filename_prefix=images,
                            image_codec=api.ImageCodec.IC_JPEG,
                        )
                    ]
                    if images
                    else [],
                    advanced=api.EncodingOptions(width=int(width), height=int(height), framerate=30),
                    webhooks=hooks,
                )
                dump(await lk.egress.start_web_egress(req))
            elif command == "start-web-s3":
                page, key, width, height, *rest = args
                hls = rest[1] if rest[:1] == ["--hls"] else None
                s3 = api.S3Upload(
                    access_key=os.environ["S3_ACCESS_KEY"],
                    secret=os.environ["S3_SECRET"],
                    bucket="recordings",
                    endpoint=os.environ["S3_ENDPOINT"],
                    region="us-east-1",
                    force_path_style=True,
                )
                req = api.WebEgressRequest(
                    url=page,
                    file_outputs=[api.EncodedFileOutput(filepath=key, s3=s3)],
                    segment_outputs=[
                        api.SegmentedFileOutput(
                            filename_prefix=hls, segment_duration=1, s3=s3,
                            live_playlist_name="live.m3u8",
                        )
                    ]
                    if hls
                    else [],
                    advanced=api.EncodingOptions(width=int(width), height=int(height), framerate=30),
                )
                dump(await lk.egress.start_web_egress(req))
            elif command == "start-room":
                room, layout, *file_and_size = args
                req = api.RoomCompositeEgressRequest(
                    room_name=room, layout=layout, **a_file(*file_and_size)
                )
                dump(await lk.egress.start_room_composite_egress(req))
            elif command == "start-participant":
                room, identity, *file_and_size = args
                req = api.ParticipantEgressRequest(
                    room_name=room, identity=identity, **a_file(*file_and_size)
                )
                dump(await lk.egress.start_participant_egress(req))
            elif command == "start-tracks":
                room, filepath, width, height, video, audio = args
                req = api.TrackCompositeEgressRequest(
                    room_name=room,
                    video_track_id=video,
                    audio_track_id=audio,
                    **a_file(filepath, width, height),
                )
                dump(await lk.egress.start_track_composite_egress(req))
            elif command == "list":
                req = api.ListEgressRequest()
                it = iter(args)
                for a in it:
                    if a == "--room":
                        req.room_name = next(it)
                    elif a == "--id":
                        req.egress_id = next(it)
                    elif a == "--active":
                        req.active = True
                dump(await lk.egress.list_egress(req))
            elif command == "stop":
                dump(await lk.egress.stop_egress(api.StopEgressRequest(egress_id=args[0])))
            elif command == "update-stream":
                req = api.UpdateStreamRequest(egress_id=args[0])
                it = iter(args[1:])
                for a in it:
                    if a == "--add":
                        req.add_output_urls.append(next(it))
                    elif a == "--remove":
                        req.remove_output_urls.append(next(it))
                dump(await lk.egress.update_stream(req))
            elif command == "update-layout":
                req = api.UpdateLayoutRequest(egress_id=args[0], layout=args[1])
                dump(await lk.egress.update_layout(req))
            elif command == "tokens":
                await tokens(lk, url, key, secret)
            else:
                raise SystemExit(f"unknown command {command}")
        except ServerError as e:
            print(json.dumps({"error": e.code, "msg": e.message, "status": e.status}))


async def tokens(lk, url, key, secret):
    """ListEgress through the SDK's own Twirp client, with tokens made by its AccessToken."""
    client = lk.egress._client
    record = api.VideoGrants(room_record=True)

    async def code(token):
        try:
            await client.request(
                "Egress",
                "ListEgress",
                api.ListEgressRequest(),
                {"Authorization": f"Bearer {token}"},
                api.ListEgressResponse,
            )
            return "ok"
        except ServerError as e:
            return e.code

    out = {
        "wrong_secret": await code(
            api.AccessToken(key, "not-the-secret-of-this-key").with_grants(record).to_jwt()
        ),
        "expired": await code(
            api.AccessToken(key, secret)
            .with_grants(record)
            .with_ttl(datetime.timedelta(seconds=-60))
            .to_jwt()
        ),
        "no_grant": await code(
            api.AccessToken(key, secret)
            .with_identity("viewer")
            .with_grants(api.VideoGrants(room_join=True, room="r"))
            .to_jwt()
        ),
        "good": await code(api.AccessToken(key, secret).with_grants(record).to_jwt()),
    }
    # The JSON encoding, as curl users send it.
    token = api.AccessToken(key, secret).with_grants(record).to_jwt()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/twirp/livekit.Egress/ListEgress",
            data="{}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as resp:
            body = await resp.json(content_type=None)
            out["json"] = resp.status if "items" in body or body == {} else body
    print(json.dumps(out))


asyncio.run(main())
