"""aliyun-python-sdk-kms (aliyunsdkcore, signature v1) against `datakey kms serve`."""

import base64
import json
import os
import sys
import uuid
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from aliyunsdkcore.client import AcsClient  # noqa: E402
from aliyunsdkcore.http import protocol_type  # noqa: E402
from aliyunsdkcore.utils import parameter_helper  # noqa: E402
from aliyunsdkkms.request.v20160120 import (  # noqa: E402
    CreateAliasRequest,
    CreateKeyRequest,
    CreateKeyVersionRequest,
    DecryptRequest,
    DeleteAliasRequest,
    DescribeKeyRequest,
    EncryptRequest,
    GenerateDataKeyRequest,
    GenerateDataKeyWithoutPlaintextRequest,
    ListAliasesByKeyIdRequest,
    ListKeysRequest,
    ListKeyVersionsRequest,
    ReEncryptRequest,
)
from harness import check, credentials, expect_error, run  # noqa: E402


class Kms:
    """AcsClient at its defaults; this SDK takes the host per request, the port and CA on the client."""

    def __init__(self, target, secret=None):
        key_id, key_secret = credentials()
        host, port = target['endpoint'].rsplit(':', 1)
        self.target = target
        self.host = host
        self.client = AcsClient(
            key_id, secret or key_secret, 'cn-hangzhou', port=int(port), verify=target.get('ca')
        )

    def call(self, request_class, **params):
        request = request_class()
        request.set_endpoint(self.host)
        # The SDK compares with `is`: its own constants, not an equal string.
        https = self.target['protocol'] == 'https'
        request.set_protocol_type(protocol_type.HTTPS if https else protocol_type.HTTP)
        for name, value in params.items():
            getattr(request, f'set_{name}')(value)
        return json.loads(self.client.do_action_with_exception(request))


def code_of(err):
    return err.get_error_code() if hasattr(err, 'get_error_code') else None


def context_of(target):
    return SimpleNamespace(target=target, kms=Kms(target))


def new_key(c):
    return c.kms.call(CreateKeyRequest.CreateKeyRequest, Description='sdk suite')['KeyMetadata']


def case_create_key(c):
    meta = new_key(c)
    check(meta['KeySpec'] == 'Aliyun_AES_256' and meta['KeyState'] == 'Enabled', f'{meta}')
    described = c.kms.call(DescribeKeyRequest.DescribeKeyRequest, KeyId=meta['KeyId'])
    check(described['KeyMetadata']['Arn'].endswith(f"key/{meta['KeyId']}"), 'arn')


def case_generate_data_key(c):
    key_id = new_key(c)['KeyId']
    context = json.dumps({'app': 'orders', 'tenant': 'a b*~/'})
    r16 = c.kms.call(GenerateDataKeyRequest.GenerateDataKeyRequest, KeyId=key_id, KeySpec='AES_128')
    check(len(base64.b64decode(r16['Plaintext'])) == 16, 'AES_128 gives 16 bytes')
    r = c.kms.call(
        GenerateDataKeyRequest.GenerateDataKeyRequest,
        KeyId=key_id,
        NumberOfBytes=48,
        EncryptionContext=context,
    )
    check(r['KeyId'] == key_id and len(base64.b64decode(r['Plaintext'])) == 48, 'NumberOfBytes')
    opened = c.kms.call(
        DecryptRequest.DecryptRequest, CiphertextBlob=r['CiphertextBlob'], EncryptionContext=context
    )
    check(opened['Plaintext'] == r['Plaintext'], 'decrypt')
    expect_error(
        lambda: c.kms.call(
            DecryptRequest.DecryptRequest,
            CiphertextBlob=r['CiphertextBlob'],
            EncryptionContext='{"app":"x"}',
        ),
        code_of,
        'InvalidParameter',
    )


def case_generate_data_key_without_plaintext(c):
    key_id = new_key(c)['KeyId']
    r = c.kms.call(
        GenerateDataKeyWithoutPlaintextRequest.GenerateDataKeyWithoutPlaintextRequest,
        KeyId=key_id,
        EncryptionContext='{"k":"v"}',
    )
    check('Plaintext' not in r, 'no plaintext')
    opened = c.kms.call(
        DecryptRequest.DecryptRequest,
        CiphertextBlob=r['CiphertextBlob'],
        EncryptionContext='{"k":"v"}',
    )
    check(len(base64.b64decode(opened['Plaintext'])) == 32, 'default 32 bytes')


def case_key_versions(c):
    key = new_key(c)
    initial = key['PrimaryKeyVersion']
    before = c.kms.call(GenerateDataKeyRequest.GenerateDataKeyRequest, KeyId=key['KeyId'])
    created = c.kms.call(CreateKeyVersionRequest.CreateKeyVersionRequest, KeyId=key['KeyId'])
    new_version = created['KeyVersion']['KeyVersionId']
    check(new_version != initial, 'a new version')
    meta = c.kms.call(DescribeKeyRequest.DescribeKeyRequest, KeyId=key['KeyId'])['KeyMetadata']
    check(meta['PrimaryKeyVersion'] == new_version, 'the new version is primary')
    listed = c.kms.call(ListKeyVersionsRequest.ListKeyVersionsRequest, KeyId=key['KeyId'])
    check(listed['TotalCount'] == 2, f"two versions, got {listed['TotalCount']}")
    after = c.kms.call(GenerateDataKeyRequest.GenerateDataKeyRequest, KeyId=key['KeyId'])
    check(after['KeyVersionId'] == initial, 'GenerateDataKey keeps the initial version')
    old = c.kms.call(DecryptRequest.DecryptRequest, CiphertextBlob=before['CiphertextBlob'])
    check(old['Plaintext'] == before['Plaintext'], 'old blobs stay decryptable')


def case_encrypt_reencrypt(c):
    source, destination = new_key(c)['KeyId'], new_key(c)['KeyId']
    plaintext = base64.b64encode(b'hello from the sdk suite').decode()
    sealed = c.kms.call(
        EncryptRequest.EncryptRequest,
        KeyId=source,
        Plaintext=plaintext,
        EncryptionContext='{"a":"1"}',
    )
    moved = c.kms.call(
        ReEncryptRequest.ReEncryptRequest,
        CiphertextBlob=sealed['CiphertextBlob'],
        SourceEncryptionContext='{"a":"1"}',
        DestinationKeyId=destination,
        DestinationEncryptionContext='{"b":"2"}',
    )
    check(moved['KeyId'] == destination, 're-wrapped under the destination key')
    opened = c.kms.call(
        DecryptRequest.DecryptRequest,
        CiphertextBlob=moved['CiphertextBlob'],
        EncryptionContext='{"b":"2"}',
    )
    check(opened['KeyId'] == destination and opened['Plaintext'] == plaintext, 'round trip')


def case_aliases(c):
    key_id = new_key(c)['KeyId']
    alias = f'alias/sdk-{uuid.uuid4().hex[:12]}'
    c.kms.call(CreateAliasRequest.CreateAliasRequest, AliasName=alias, KeyId=key_id)
    r = c.kms.call(GenerateDataKeyRequest.GenerateDataKeyRequest, KeyId=alias)
    check(r['KeyId'] == key_id, 'an alias resolves to its key')
    listed = c.kms.call(ListAliasesByKeyIdRequest.ListAliasesByKeyIdRequest, KeyId=key_id)
    check([a['AliasName'] for a in listed['Aliases']['Alias']] == [alias], 'ListAliasesByKeyId')
    c.kms.call(DeleteAliasRequest.DeleteAliasRequest, AliasName=alias)
    expect_error(
        lambda: c.kms.call(DescribeKeyRequest.DescribeKeyRequest, KeyId=alias),
        code_of,
        'Forbidden.AliasNotFound',
    )


def case_unknown_key(c):
    err = expect_error(
        lambda: c.kms.call(DescribeKeyRequest.DescribeKeyRequest, KeyId=str(uuid.uuid4())),
        code_of,
        'Forbidden.KeyNotFound',
    )
    check(err.get_http_status() == 404, f'status {err.get_http_status()}')


def case_wrong_secret(c):
    """The SDK compares the server string to sign with its own and reports the secret."""
    wrong = Kms(c.target, secret='not-the-secret')
    expect_error(lambda: wrong.call(ListKeysRequest.ListKeysRequest), code_of, 'InvalidAccessKeySecret')


class patched:
    """Replaces a function of the SDK's parameter helper (its clock or nonce) for one call."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.original = getattr(parameter_helper, self.name)
        setattr(parameter_helper, self.name, lambda: self.value)

    def __exit__(self, *exc):
        setattr(parameter_helper, self.name, self.original)


def case_stale_timestamp(c):
    with patched('get_iso_8061_date', '2020-01-01T00:00:00Z'):
        expect_error(lambda: c.kms.call(ListKeysRequest.ListKeysRequest), code_of, 'IllegalTimestamp')


def case_replayed_nonce(c):
    with patched('get_uuid', uuid.uuid4().hex):
        c.kms.call(ListKeysRequest.ListKeysRequest)
        expect_error(
            lambda: c.kms.call(ListKeysRequest.ListKeysRequest), code_of, 'SignatureNonceUsed'
        )


if __name__ == '__main__':
    run(globals(), context_of)
