"""moto's server, with AWS's atomic create-if-absent for key pairs and security groups.

moto's threaded server checks that a key pair's (or a group's) name is free, then parses and
stores it, with no lock: two `ImportKeyPair` calls for one name at once can both succeed (seen
when two `bastion up` race under a loaded CI). EC2 creates a name once, whoever asks, so the
check and the store are made one step here. Everything else is moto's own `moto_server`.
"""

import sys
import threading

from moto.ec2.models.key_pairs import KeyPairBackend
from moto.ec2.models.security_groups import SecurityGroupBackend
from moto.server import main

_lock = threading.Lock()


def _atomic(cls, name):
    original = getattr(cls, name)

    def call(self, *args, **kwargs):
        with _lock:
            return original(self, *args, **kwargs)

    setattr(cls, name, call)


for _cls, _name in [
    (KeyPairBackend, "import_key_pair"),
    (KeyPairBackend, "create_key_pair"),
    (SecurityGroupBackend, "create_security_group"),
]:
    _atomic(_cls, _name)

if __name__ == "__main__":
    main(sys.argv[1:])
