#!/usr/bin/env python3
"""Checks behave's JUnit reports against conformance/claimed.

usage: conformance_check.py CLAIMED JUNIT_DIR "FEATURES" RUN_SH_EXIT_CODE

A claimed feature must have a report in which no scenario failed; a claimed single
scenario must be in its feature's report and must not have failed. Prints one line per
claim that does not hold and exits 1 if there is any. With CLAIMED=/dev/null (an ad-hoc
run of other features) it only reports run.sh's verdict.
"""
import glob
import os
import sys
import xml.etree.ElementTree as ET


def main() -> int:
    claimed_path, junit_dir, features, rc = sys.argv[1], sys.argv[2], sys.argv[3].split(), int(sys.argv[4])
    claims = []  # (feature, scenario or None)
    with open(claimed_path) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            feature, _, scenario = line.partition(':')
            claims.append((feature.strip(), scenario.strip() or None))
    if not claims:
        return 0 if rc == 0 else 1

    results = {}  # feature -> {scenario name: status}
    for path in glob.glob(os.path.join(junit_dir, 'TESTS-*.xml')):
        suite = ET.parse(path).getroot()
        feature = os.path.basename(path)[len('TESTS-'):-len('.xml')]
        results[feature] = {tc.get('name'): tc.get('status') for tc in suite.iter('testcase')}

    problems = []
    for feature, scenario in claims:
        if feature not in features:
            continue
        scenarios = results.get(feature)
        if scenarios is None:
            problems.append(f'{feature}: no result (the feature crashed or timed out)')
        elif scenario is None:
            problems += [f'{feature}: {name}: {st}' for name, st in scenarios.items()
                         if st not in ('passed', 'skipped')]
        elif scenario not in scenarios:
            problems.append(f'{feature}: {scenario}: not run')
        elif scenarios[scenario] not in ('passed', 'skipped'):
            problems.append(f'{feature}: {scenario}: {scenarios[scenario]}')
    for p in problems:
        print(f'   CLAIMED BUT FAILED: {p}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
