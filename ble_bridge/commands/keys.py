"""``ble-bridge keygen``: create a node identity and print its ids."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import StorageFailure
from ..signer import new_key_signer_file
from ..wire.identity import Identity, KeyFileError

DEFAULT_KEY_PATH = Path("/var/lib/ble-bridge/identity.key")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keygen", help="create a node identity (X25519 + Ed25519) and print its ids")
    p.add_argument("--out", type=Path, help="key file to write (mode 0600); omit to print only")
    p.add_argument(
        "--show", type=Path, metavar="PATH", help="print the ids of an existing key file"
    )
    p.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    try:
        if args.show is not None:
            identity = Identity.load(args.show)
        else:
            identity = Identity.generate()
            if args.out is not None:
                identity.save(args.out)
                # a new key has signed nothing: its (empty) signer state says so, or the
                # node would catch up first as if it had lost its state
                new_key_signer_file(args.out, identity.signing_public)
    except (KeyFileError, StorageFailure) as exc:
        print(f"ble-bridge keygen: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "peer_id": identity.peer_id.hex(),
                "noise_public": identity.noise_public.hex(),
                "signing_public": identity.signing_public.hex(),
                "key_file": str(args.out or args.show) if (args.out or args.show) else None,
            }
        )
    )
    return 0
