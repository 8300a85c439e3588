"""Shared by the Python SDK suites: targets from the environment, one JSON line per case."""

import json
import os
import sys


class CaseFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CaseFailed(what)


def credentials():
    return os.environ['KMS_ACCESS_KEY_ID'], os.environ['KMS_ACCESS_KEY_SECRET']


def expect_error(call, code_of, expected):
    """Runs call(), which must raise; returns the error after checking code_of(error) == expected."""
    try:
        call()
    except CaseFailed:
        raise
    except Exception as err:  # the SDK's own exception type
        got = code_of(err)
        check(got == expected, f'expected error {expected}, got {got}: {err}')
        return err
    raise CaseFailed(f'expected error {expected}, but the call succeeded')


# The cases every suite runs, in order (shared with test/sdk/sdk-suites.ts).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'cases.json')) as f:
    COMMON_CASES = json.load(f)


def run(suite, context_of, extra_cases=()):
    """Runs case `case_<name>` of the suite's namespace for every case name and target."""
    cases = [
        (name, suite[f"case_{name.replace('-', '_')}"]) for name in [*COMMON_CASES, *extra_cases]
    ]
    failed = 0
    for target in json.loads(os.environ['KMS_TARGETS']):
        context = context_of(target)
        for name, case in cases:
            result = {'target': target['name'], 'case': name, 'ok': True}
            try:
                case(context)
            except Exception as err:
                failed += 1
                result.update(ok=False, error=f'{type(err).__name__}: {err}'[:2000])
            print(json.dumps(result), flush=True)
    sys.exit(1 if failed else 0)
