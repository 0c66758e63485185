"""The simulated sandbox CloudTrail signing key: one fixed RSA-2048 key, public on purpose.

AWS signs each Region's digest files with a key of its own and hands out the public half
through ``ListPublicKeys``; the sandbox plays that part with the key below. It is fixed in
the source, not generated per process, so the same scenario and clock give byte-identical
digests (fingerprint, signatures, ``previousDigestSignature``) in every process: a resumed
run's rebuilt world, ``sandbox serve`` and the in-process sandbox all sign alike, as the
sandbox's determinism promises. It is no secret: anyone can read it here, it signs nothing
but the simulated digests of a moto world, and it must never be used outside the sandbox (a
digest signed with it proves nothing about a real trail).
"""

from __future__ import annotations

import functools
from typing import Any

#: SIMULATED: the sandbox's CloudTrail digest signing key (RSA 2048, PKCS #1 PEM). Public,
#: made once with ``cryptography`` for kmsir's sandbox; never use it outside the sandbox.
SANDBOX_CLOUDTRAIL_SIGNING_KEY_PEM = """\
-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAzSxdT4S6Dq45dot4Ek5f78ipOFZ+u2PmR39+2MA2XbWTYV54
gYLP/sbqCI8dFuZFZtDAE2lqJGJEdOktaNtRcYhgs7vpv+ugO2nSpRsxs+9aI2H6
KFO0Lnu7cQlPfmXVcPPqNe86a88i6+Ir9a4R5Dvk/Zkvy7UDgrNLVmw3OL4mBzTH
7/3GR7L0kVK7rak6ENAKmsugpRS7Jmy28sXhrZWQvkILbKAlNGk+lIBS7B8qiPxt
1NoxAK3x+vRuwfo/5XNzKL/d5iVBuswH2egRYRNswRdpfSsHoscV6nYJOfiOILWw
ANAjZEkUIDxjuAqwW90xZumBQxKJzRoz8vy2vQIDAQABAoIBABQXXBI4jqx3v+v6
P4lk+cM8hK83orSTu8d6/KwZzNKwWfywiF+ZgU5Gb3R9gmO6EntW+Pgg3BWXNqaC
jvSaeKDQsgEa5z21kFZ0R/3snWYsi68bUQ8FFofWv5KTtTnmm75/CouHIAY4Nzs4
eQWKqvkM96EkKkIDn8X7HxpMNO9Ujyy0i1GRNpiJlQi2Favnf8+g0aa978yO0V2p
URgyF7heCtOu9c7ZgmpMlRBFU7LiBHeVJY6My7xaSMSd22n78KSpVxs6q04bAenG
WcAl0Y4qBDCaFBcFFEGCZ0J9QB2szkarxi3HLMlc071JU392zb02NKNaJs1wn7bL
cYYF1yECgYEA+6O889B1aZT7InGIqAf87m1v1rQIJQDuhHj/IBe6KtUKpTjjRChO
J9fOQ/jcN3V9HFdQNeHyqDb5hbeo9FOFCJ85ZT1oz6mecH13Mt4E7RMt4dZrcirG
2GOcaugB5plISUsHUb8hbHZSbCVaq6v6Z0J2+sj0lHiKw4noLxef9tcCgYEA0LqB
BLSCe9ak5eHRrCwSleafJX6eVN0zIAhVtGjtl6pLmzmKDkNj37kQL6TdMxHx/Vgo
iPxytUqlOEotzHPH9I3CO7DOVpUeVf7F2iZZBYJ5I3r78UdNlnGDi3oCKyCWhIU+
i7OWS44pk3jL/MErZRXsTHJZXNHD8mNtrqKl0IsCgYAqBHIlh/ZC9fRlEO4PmJ3c
NfvJru/5Ncmd5xI6ipu0UTRg2DnihJRgRMGVSfWDcSO92rpy9NJu0hciA8O7YELD
aMrNo85fdmQVRm3j2XybFWvA3Ou9+XSQZzmUBD9lAM04J8YGGVL8aFlk42vbZHEA
UvHI+EsWi3YoJlvVmS1FqwKBgQCnsb+oNRJERk3TN1tKNVp1PoUMDa9NRS4nBSs+
N7LzT+lQe6j0DqZ1/uwHKzBgMIG35hUjAZdzGdal48rp4Pd7/kxXwpP0MffeZUM2
IesRpyKGI++4iG3IeciSzWJindrv+1El0hHlAAFdLwbMObIQk812GcS78ve3jLR5
QslvQwKBgDJU9tfz1gW3++A5tBsTlpkyzlhogZQpuU5zgGjLVcBZkP2Hs6Ficsh7
wDCpRK8gHs33AoeW1HH7GjcHhVnoq1VWYBO03f2/cZZj05Af0Trcavo+gJgUm26W
4Cz2OJAPIQhLPgamViw3QeoRJ01wqP+yvdbDxU3/vNztNliu5rVg
-----END RSA PRIVATE KEY-----
"""


@functools.cache
def signing_key() -> Any:
    """The simulated sandbox CloudTrail signing key, loaded once per process."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(SANDBOX_CLOUDTRAIL_SIGNING_KEY_PEM.encode(), password=None)
