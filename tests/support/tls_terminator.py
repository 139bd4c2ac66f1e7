"""A TLS terminator on 127.0.0.1: TLS connections on LISTEN_PORT are forwarded, decrypted, to
127.0.0.1:TARGET_PORT (nginx-rtmp), so tests can stream rtmps:// to a real RTMP server.

Usage: tls_terminator.py LISTEN_PORT TARGET_PORT CERT KEY
"""
import asyncio
import ssl
import sys


async def main():
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, ssl=ctx)
    async with server:
        await server.serve_forever()


asyncio.run(main())
