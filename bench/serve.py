"""Load test of `fakedet serve` on loopback: C concurrent clients send R requests in all (bounded).

Starts the app for MODEL in this process (uvicorn on 127.0.0.1, a free port), then each client
thread posts one generated image per request to /v1/predict (or /v1/explain) until R requests
have been sent. Reports errors, p50/p99 latency, requests/s and the mean number of images the
server embedded per model call (request batching). Example (a quiet machine):

    python bench/serve.py cifake-effnet-lite0-...-logreg --clients 8 --requests 500
"""
from __future__ import annotations

import argparse
import io
import itertools
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from common import output_options, publish

from fakedet.catalog import find_model
from fakedet.detector import Detector
from fakedet.export import probe_images
from fakedet.serve import background_server, create_app


def encoded_images(n: int, size: int) -> list[bytes]:
    out = []
    for image in probe_images(n, size=size):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder or name under cache/models")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--route", choices=["predict", "explain"], default="predict")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs sent")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request before it counts as an error")
    output_options(parser, "Serving: loopback load test")
    args = parser.parse_args()

    detector = Detector.load(find_model(args.model, args.cache))
    app = create_app(detector, device=args.device)
    payloads = encoded_images(16, args.image_size)
    tickets = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=args.timeout) as http:
            while True:
                with lock:
                    ticket = next(tickets)
                if ticket >= args.requests:
                    return
                files = {"files": (f"{ticket}.jpg", payloads[ticket % len(payloads)], "image/jpeg")}
                start = time.perf_counter()
                try:
                    response = http.post(f"/v1/{args.route}", files=files)
                    ok = response.status_code == 200 and "p_fake" in response.json()["results"][0]
                    error = "" if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as err:
                    error = f"{type(err).__name__}: {err}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if error:
                        errors.append(error)

    with background_server(app) as url:
        httpx.post(f"{url}/v1/{args.route}", files={"files": ("warm.jpg", payloads[0], "image/jpeg")},
                   timeout=args.timeout).raise_for_status()  # first call: lazy initialisation, not measured
        warm_calls = len(app.state.batcher.sizes)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, [url] * args.clients))
        wall = time.perf_counter() - start
        sizes = app.state.batcher.sizes[warm_calls:]

    ms = np.array(latencies) * 1000
    body = (f"Model `{args.model}` ({detector.backbone}, {detector.head}), route /v1/{args.route}, "
            f"{args.clients} concurrent clients, {args.requests} requests of one {args.image_size}x{args.image_size} "
            f"JPEG each, server and clients on one machine (loopback).\n\n"
            "| clients | requests | errors | p50 ms | p99 ms | requests/s | images per model call |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {args.clients} | {len(latencies)} | {len(errors)} | {np.percentile(ms, 50):.0f} | "
            f"{np.percentile(ms, 99):.0f} | {len(latencies) / wall:.1f} | "
            f"{statistics.mean(sizes) if sizes else float('nan'):.2f} |\n")
    if errors:
        body += "\nFirst errors:\n\n" + "\n".join(f"- {e}" for e in errors[:5]) + "\n"
    publish(args, body)


if __name__ == "__main__":
    main()
