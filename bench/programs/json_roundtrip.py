"""JSON encode/decode round trips of a generated, nested document.

Uses the stdlib json module (C accelerator when available) plus the
Python-level work of building and walking the data.  Deterministic
(dict insertion order, fixed PRNG seed); prints a checksum line.
"""
import json
import random
import sys

ROUNDS = 16


def make_doc(rng, n_users):
    users = []
    for i in range(n_users):
        users.append({
            "id": i,
            "name": f"user{i:05d}",
            "email": f"user{i}@example.org",
            "active": rng.random() < 0.7,
            "score": round(rng.uniform(0, 1000), 3),
            "tags": [f"t{rng.randrange(50)}" for _ in range(rng.randrange(1, 6))],
            "address": {
                "street": f"{rng.randrange(1, 999)} Main St",
                "city": rng.choice(["Oslo", "Lima", "Kyiv", "Pune", "Perth", "Quito"]),
                "zip": f"{rng.randrange(10000, 99999)}",
                "geo": [round(rng.uniform(-90, 90), 5), round(rng.uniform(-180, 180), 5)],
            },
            "history": [
                {"t": rng.randrange(1_000_000), "ev": rng.choice(["login", "buy", "view", "exit"]),
                 "note": "caf\u00e9 \u2603 \"quoted\" \\ slash" if rng.random() < 0.1 else None}
                for _ in range(rng.randrange(0, 8))
            ],
        })
    return {"version": 3, "generated": "fixed", "users": users}


def walk(obj):
    """Python-level traversal producing an integer checksum."""
    if isinstance(obj, dict):
        h = 7
        for k, v in obj.items():
            h = (h * 31 + len(k) + walk(v)) & 0xFFFFFFFF
        return h
    if isinstance(obj, list):
        h = 11
        for v in obj:
            h = (h * 17 + walk(v)) & 0xFFFFFFFF
        return h
    if isinstance(obj, str):
        return len(obj) * 3 + (ord(obj[0]) if obj else 0)
    if isinstance(obj, bool):
        return 5 if obj else 3
    if isinstance(obj, int):
        return obj & 0xFFFF
    if isinstance(obj, float):
        return int(obj * 1000) & 0xFFFF
    return 1  # None


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    rng = random.Random(20240601)
    doc = make_doc(rng, 1500)
    checksum = 0
    total = 0
    for r in range(rounds):
        if r % 2:
            text = json.dumps(doc, sort_keys=True, indent=1)
        else:
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        total += len(text)
        back = json.loads(text)
        if back != doc:
            raise SystemExit("json round trip mismatch")
        back["users"][r % len(back["users"])]["score"] += 1.0
        checksum = (checksum * 131 + walk(back)) % 1_000_000_007
    print(f"json_roundtrip rounds={rounds} chars={total} checksum={checksum}")


if __name__ == "__main__":
    main()
