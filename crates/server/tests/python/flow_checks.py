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


def main(run_flow):
    """Runs a flow: exit status 1 with the failed check on standard error."""
    import sys
    try:
        run_flow()
    except CheckFailed as e:
        print("FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
