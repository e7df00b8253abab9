"""Round-overhead benchmark of Flower, the counterpart of `fedshield bench rounds`.

A real Flower server (legacy gRPC transport, `flwr.server.start_server`) and K
real Flower clients (`flwr.client.start_client`), each in its own process, on
127.0.0.1. The model is one float32 array of P parameters; each client's fit
is a no-op that returns the parameters plus a small constant. FedAvg over all
K clients every round (no evaluation), one warm-up round and R timed rounds.

Round time: from the strategy's `configure_fit` (the round starts) to the end
of its `aggregate_fit` (the next model exists), as fedshield's is from the
announcement to the publication. Peak memory: VmHWM of the server and of each
client. Bytes moved are not measured here.

With --tls the server presents a certificate of a CA made for the run and the
clients check it; Flower's gRPC transport has no client certificates (it
authenticates nodes with separate EC keys, not used here), so this is
server-authenticated TLS, not mutual TLS.

Usage (needs `pip install flwr psutil` in a virtual environment):
    python bench_rounds.py --participants 8 --params 1000000 --rounds 3 --tls --json
"""

import argparse
import datetime
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WARMUP_ROUNDS = 1
MAX_MESSAGE_BYTES = 1 << 30


def peak_rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def write_pki(directory):
    """Writes ca.pem, server.pem and server.key (localhost, 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flower bench CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(directory, "ca.pem"), "wb") as out:
        out.write(ca_cert.public_bytes(pem))
    with open(os.path.join(directory, "server.pem"), "wb") as out:
        out.write(server_cert.public_bytes(pem))
    with open(os.path.join(directory, "server.key"), "wb") as out:
        out.write(
            server_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def run_server(args):
    import numpy as np
    import flwr as fl
    from flwr.common import ndarrays_to_parameters

    class TimedFedAvg(fl.server.strategy.FedAvg):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.started = {}
            self.seconds = {}

        def configure_fit(self, server_round, parameters, client_manager):
            self.started[server_round] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            aggregated = super().aggregate_fit(server_round, results, failures)
            self.seconds[server_round] = time.perf_counter() - self.started[server_round]
            return aggregated

    initial = np.random.default_rng(1).uniform(-0.1, 0.1, args.params).astype(np.float32)
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=args.participants,
        min_evaluate_clients=0,
        min_available_clients=args.participants,
        initial_parameters=ndarrays_to_parameters([initial]),
    )
    del initial
    certificates = None
    if args.tls_dir:
        certificates = tuple(
            open(os.path.join(args.tls_dir, name), "rb").read()
            for name in ("ca.pem", "server.pem", "server.key")
        )
    fl.server.start_server(
        server_address=f"127.0.0.1:{args.port}",
        config=fl.server.ServerConfig(num_rounds=args.rounds),
        strategy=strategy,
        grpc_max_message_length=MAX_MESSAGE_BYTES,
        certificates=certificates,
    )
    print(
        json.dumps(
            {
                "event": "done",
                "round_seconds": [strategy.seconds[r] for r in sorted(strategy.seconds)],
                "peak_rss_bytes": peak_rss_bytes(),
            }
        ),
        flush=True,
    )


def run_client(args):
    import flwr as fl

    class NoOpClient(fl.client.NumPyClient):
        def fit(self, parameters, config):
            return [array + args.increment for array in parameters], 1, {}

    root_certificates = None
    if args.tls_dir:
        root_certificates = open(os.path.join(args.tls_dir, "ca.pem"), "rb").read()
    fl.client.start_client(
        server_address=f"127.0.0.1:{args.port}",
        client=NoOpClient().to_client(),
        grpc_max_message_length=MAX_MESSAGE_BYTES,
        root_certificates=root_certificates,
        insecure=None if root_certificates else True,
    )
    print(json.dumps({"event": "done", "peak_rss_bytes": peak_rss_bytes()}), flush=True)


def last_json_line(text):
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def orchestrate(args):
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flower-bench-") as work_dir:
        common = ["--port", str(port), "--params", str(args.params)]
        if args.tls:
            write_pki(work_dir)
            common += ["--tls-dir", work_dir]
        environment = dict(os.environ, GRPC_VERBOSITY="ERROR")
        quiet = subprocess.DEVNULL if not args.verbose else None
        server = subprocess.Popen(
            [sys.executable, __file__, "server", "--participants", str(args.participants),
             "--rounds", str(args.rounds + WARMUP_ROUNDS)] + common,
            stdout=subprocess.PIPE, stderr=quiet, text=True, env=environment,
        )
        time.sleep(3)  # the legacy server has no readiness signal; clients retry anyway
        clients = [
            subprocess.Popen(
                [sys.executable, __file__, "client"] + common,
                stdout=subprocess.PIPE, stderr=quiet, text=True, env=environment,
            )
            for _ in range(args.participants)
        ]
        server_report = last_json_line(server.communicate()[0])
        client_reports = [last_json_line(client.communicate()[0]) for client in clients]
    if server_report is None or any(report is None for report in client_reports):
        raise SystemExit("a Flower process ended without its report")
    timed = server_report["round_seconds"][WARMUP_ROUNDS:]
    report = {
        "framework": "flower " + __import__("flwr").__version__,
        "participants": args.participants,
        "params": args.params,
        "tls": args.tls,
        "rounds_completed": len(timed),
        "round_seconds": timed,
        "median_round_seconds": statistics.median(timed) if timed else None,
        "max_round_seconds": max(timed) if timed else None,
        "min_bytes_per_round": 2 * args.participants * args.params * 4,
        "server_peak_rss_bytes": server_report["peak_rss_bytes"],
        "client_peak_rss_bytes": client_reports[0]["peak_rss_bytes"],
        "max_client_peak_rss_bytes": max(r["peak_rss_bytes"] for r in client_reports),
    }
    if args.json:
        print(json.dumps(report))
    else:
        mib = 1024 * 1024
        print(
            f"flower: {args.participants} clients x {args.params} parameters, "
            f"{'TLS' if args.tls else 'plaintext'}: round median {report['median_round_seconds']:.3f} s, "
            f"max {report['max_round_seconds']:.3f} s; "
            f"peak memory server {report['server_peak_rss_bytes'] / mib:.1f} MiB, "
            f"client {report['client_peak_rss_bytes'] / mib:.1f} MiB"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "server", "client"])
    parser.add_argument("--participants", type=int, default=2)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--port", type=int)
    parser.add_argument("--tls-dir")
    parser.add_argument("--increment", type=float, default=1e-3)
    args = parser.parse_args()
    if args.role == "server":
        run_server(args)
    elif args.role == "client":
        run_client(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
