"""What the tb-rest-client flows share: a failed check and the settings the Rust test passes."""

import os


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def env(name):
    value = os.environ.get(name)
    if not value:
        raise CheckFailed("environment variable %s is not set" % name)
    return value
