"""What the proxy withstands: each test is named after the attack it reproduces.

Hostile clients (paths, headers, bodies), hostile upstreams (metadata, redirects, bodies),
hostile uploaders (archives, records, framing), a failing disk and a hostile configuration.
Every test runs against real processes or the whole app, and fails on a proxy without the
defence it names.
"""
