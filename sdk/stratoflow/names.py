"""Generated run names ("brisk-otter"), shared by the engine and the API without heavy imports."""

from __future__ import annotations

import random

ADJECTIVES = ("amber", "brisk", "calm", "daring", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly", "keen",
              "lively", "mellow", "nimble", "olive", "proud", "quiet", "rapid", "silver", "tidy", "urban",
              "vivid", "witty", "young", "zesty")
ANIMALS = ("alpaca", "badger", "cheetah", "dingo", "egret", "falcon", "gecko", "heron", "ibis", "jackal", "koala",
           "lemur", "marmot", "newt", "otter", "puffin", "quokka", "raven", "seal", "tapir", "urchin", "vole",
           "walrus", "yak", "zebra")


def generate_run_name() -> str:
    return f"{random.choice(ADJECTIVES)}-{random.choice(ANIMALS)}"  # nosec B311  # a display name for a run, nothing secret
