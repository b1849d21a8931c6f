"""A stand-in for an EC2 Instance Connect Endpoint's tunnel service, which moto lacks.

It speaks the real protocol: a TLS WebSocket on port 443 of the endpoint's DNS name, opened by
`GET /openTunnel?instanceConnectEndpointId=...&remotePort=...&privateIpAddress=...
[&maxTunnelDuration=...]` presigned with SigV4 for the service `ec2-instance-connect`. The
signature is checked by recomputing it with botocore's signer (not bastion's) and the test's
credentials; an expired URL, another endpoint's id, a port other than 22 and 3389, and the 21st
concurrent connection are refused with an HTTP status and AWS's JSON error body. An accepted
tunnel dials the private IP from where this process runs (the lab's namespace, inside the VPC),
carries bytes as binary frames both ways, and is closed when its duration is up.

Every decision is logged as one JSON line in --log for the test to read.
"""

import argparse
import asyncio
import datetime
import hmac
import json
import ssl
import sys
import time
import urllib.parse
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

SERVICE = "ec2-instance-connect"
MAX_FRAME = 65_000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, help="IP:PORT")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--endpoint-id", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--max-duration", type=int, default=3600, help="seconds; AWS's is an hour")
    p.add_argument("--cap", type=int, default=20, help="concurrent connections")
    p.add_argument("--log", required=True)
    args = p.parse_args()
    asyncio.run(Endpoint(args).run())


class Refusal(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Endpoint:
    def __init__(self, args):
        self.args = args
        self.active = 0
        self.log_file = open(args.log, "a", buffering=1)

    def log(self, **event):
        event["t"] = round(time.time(), 3)
        self.log_file.write(json.dumps(event) + "\n")

    async def run(self):
        host, port = self.args.listen.rsplit(":", 1)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.args.cert, self.args.key)
        async with serve(
            self.tunnel,
            host,
            int(port),
            ssl=tls,
            process_request=self.check,
            process_response=self.stamp,
            max_size=1 << 20,
            ping_interval=None,
            compression=None,
        ) as server:
            self.log(event="listening")
            await server.serve_forever()

    def stamp(self, connection, request, response):
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response

    def check(self, connection, request):
        """Refuses what AWS refuses, before the upgrade; None lets the handshake go on."""
        try:
            params = self.verify(request.path, request.headers.get("Host", ""))
        except Refusal as r:
            self.log(event="refused", status=r.status, code=r.code, why=r.message)
            body = json.dumps({"ErrorCode": r.code, "Message": r.message}).encode()
            headers = Headers(
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return Response(r.status, "Refused", headers, body)
        if self.active >= self.args.cap:
            message = f"The maximum number of concurrent connections ({self.args.cap}) for this endpoint has been reached."
            self.log(event="refused", status=429, code="TooManyRequests", why=message)
            body = json.dumps({"ErrorCode": "TooManyRequests", "Message": message}).encode()
            headers = Headers(
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return Response(429, "Too Many Requests", headers, body)
        # Counted from here: the upgrade and the tunnel's handler follow.
        self.active += 1
        connection.tunnel_params = params
        return None

    def verify(self, path, host):
        url = urllib.parse.urlsplit(path)
        if url.path != "/openTunnel":
            raise Refusal(404, "NotFound", f"no such resource {url.path}")
        pairs = [kv.split("=", 1) for kv in url.query.split("&") if "=" in kv]
        q = {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in pairs}
        for name in ("instanceConnectEndpointId", "remotePort", "privateIpAddress",
                     "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                     "X-Amz-SignedHeaders", "X-Amz-Signature"):
            if name not in q:
                raise Refusal(400, "MissingParameter", f"The request must contain the parameter {name}")
        access_key, date, region, service, terminator = q["X-Amz-Credential"].split("/")
        if q["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256" or terminator != "aws4_request":
            raise Refusal(403, "IncompleteSignature", "Unsupported signing algorithm")
        if service != SERVICE or region != self.args.region:
            raise Refusal(403, "SignatureDoesNotMatch", f"Credential should be scoped to a valid region and service ({region}/{service})")
        if access_key != self.args.access_key:
            raise Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        signed_at = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        expires = int(q["X-Amz-Expires"])
        now = datetime.datetime.now(datetime.timezone.utc)
        if expires > 60 or now > signed_at + datetime.timedelta(seconds=expires):
            raise Refusal(403, "AccessDeniedException", "Request has expired")
        if signed_at > now + datetime.timedelta(minutes=5):
            raise Refusal(403, "SignatureDoesNotMatch", "Signature not yet current")
        # botocore's own SigV4: the canonical request of the URL as sent (minus its signature),
        # the host header, the empty body's hash.
        unsigned = "&".join(kv for kv in url.query.split("&") if not kv.startswith("X-Amz-Signature="))
        request = AWSRequest(method="GET", url=f"wss://{host}{url.path}?{unsigned}", headers={"host": host})
        request.context["timestamp"] = q["X-Amz-Date"]
        token = q.get("X-Amz-Security-Token")
        auth = SigV4Auth(Credentials(access_key, self.args.secret_key, token), SERVICE, region)
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, q["X-Amz-Signature"]):
            raise Refusal(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
        if q["instanceConnectEndpointId"] != self.args.endpoint_id:
            raise Refusal(400, "InvalidInstanceConnectEndpointId.NotFound", f"The instance connect endpoint ID '{q['instanceConnectEndpointId']}' does not exist")
        port = int(q["remotePort"])
        if port not in (22, 3389):
            raise Refusal(400, "InvalidParameter", "Only ports 22 and 3389 are supported")
        duration = self.args.max_duration
        if "maxTunnelDuration" in q:
            asked = int(q["maxTunnelDuration"])
            if not 1 <= asked <= 3600:
                raise Refusal(400, "InvalidParameter", "maxTunnelDuration must be between 1 and 3600")
            duration = min(duration, asked)
        return {"ip": q["privateIpAddress"], "port": port, "duration": duration}

    async def tunnel(self, ws):
        params = ws.tunnel_params if hasattr(ws, "tunnel_params") else None
        try:
            if params is None:
                return
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(params["ip"], params["port"]), 10)
            except (OSError, asyncio.TimeoutError) as e:
                self.log(event="dial-failed", ip=params["ip"], port=params["port"], why=str(e))
                await ws.close(1011, f"Failed to connect to {params['ip']}:{params['port']}")
                return
            self.log(event="open", ip=params["ip"], port=params["port"], duration=params["duration"], active=self.active)

            async def up():
                async for message in ws:
                    if isinstance(message, str):
                        await ws.close(1003, "Text frames are not supported")
                        return
                    writer.write(message)
                    await writer.drain()
                writer.close()

            async def down():
                while True:
                    data = await reader.read(MAX_FRAME)
                    if not data:
                        break
                    await ws.send(data)
                await ws.close(1000)

            pumps = asyncio.gather(up(), down())
            try:
                await asyncio.wait_for(pumps, params["duration"])
            except asyncio.TimeoutError:
                self.log(event="duration-over", duration=params["duration"])
                await ws.close(1000)
            except Exception as e:  # a peer gone mid-pump
                self.log(event="ended", why=repr(e))
            finally:
                writer.close()
            self.log(event="closed")
        finally:
            if params is not None:
                self.active -= 1


if __name__ == "__main__":
    sys.exit(main())
