"""Docker's HEALTHCHECK: this container's daphne answers /healthz with 200.

Asks with a host name from DJANGO_ALLOWED_HOSTS: Django refuses any other (HTTP 400), and the
container's own address is rarely in that list in production.
Usage: python docker/healthcheck.py [port]   (default: $PORT, else 8000; set PORT when the
command serves on another port)
"""

import os
import sys
import urllib.request


def allowed_host() -> str:
    hosts = os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")
    for host in (host.strip() for host in hosts):
        if host and host != "*":
            return host.lstrip(".")  # ".example.com" allows example.com and its subdomains
    return "localhost"


def main() -> int:
    port = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz", headers={"Host": allowed_host()}
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"healthz: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
