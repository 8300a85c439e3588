"""alibabacloud_kms20160120 (tea-openapi, ACS3-HMAC-SHA256) against `datakey kms serve`."""

import base64
import os
import sys
import uuid
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from alibabacloud_kms20160120 import models as kms  # noqa: E402
from alibabacloud_kms20160120.client import Client  # noqa: E402
from alibabacloud_tea_openapi import utils_models as openapi  # noqa: E402
from darabonba.runtime import ExtendsParameters, RuntimeOptions  # noqa: E402
from harness import check, credentials, expect_error, run  # noqa: E402


def client_for(target, secret=None, **settings):
    """The SDK at its defaults: endpoint, protocol and, for HTTPS, the test CA (a file path)."""
    key_id, key_secret = credentials()
    config = openapi.Config(
        access_key_id=key_id,
        access_key_secret=secret or key_secret,
        endpoint=target['endpoint'],
        protocol=target['protocol'],
        region_id='cn-hangzhou',
        **settings,
    )
    if target.get('ca'):
        config.ca = target['ca']
    return Client(config)


def code_of(err):
    return getattr(err, 'code', None)


def context_of(target):
    return SimpleNamespace(target=target, client=client_for(target))


def new_key(c):
    return c.client.create_key(kms.CreateKeyRequest(description='sdk suite')).body.key_metadata


def case_create_key(c):
    meta = new_key(c)
    check(meta.key_spec == 'Aliyun_AES_256' and meta.key_state == 'Enabled', f'metadata {meta}')
    described = c.client.describe_key(kms.DescribeKeyRequest(key_id=meta.key_id)).body.key_metadata
    check(described.key_id == meta.key_id and described.arn.endswith(f'key/{meta.key_id}'), 'arn')


def case_generate_data_key(c):
    key_id = new_key(c).key_id
    context = {'app': 'orders', 'tenant': 'a b*~/'}
    r16 = c.client.generate_data_key(kms.GenerateDataKeyRequest(key_id=key_id, key_spec='AES_128')).body
    check(len(base64.b64decode(r16.plaintext)) == 16, 'AES_128 gives 16 bytes')
    r = c.client.generate_data_key(
        kms.GenerateDataKeyRequest(key_id=key_id, number_of_bytes=48, encryption_context=context)
    ).body
    check(r.key_id == key_id and len(base64.b64decode(r.plaintext)) == 48, 'NumberOfBytes=48')
    opened = c.client.decrypt(
        kms.DecryptRequest(ciphertext_blob=r.ciphertext_blob, encryption_context=context)
    ).body
    check(opened.plaintext == r.plaintext and opened.key_version_id == r.key_version_id, 'decrypt')
    expect_error(
        lambda: c.client.decrypt(
            kms.DecryptRequest(ciphertext_blob=r.ciphertext_blob, encryption_context={'app': 'x'})
        ),
        code_of,
        'InvalidParameter',
    )


def case_generate_data_key_without_plaintext(c):
    key_id = new_key(c).key_id
    r = c.client.generate_data_key_without_plaintext(
        kms.GenerateDataKeyWithoutPlaintextRequest(key_id=key_id, encryption_context={'k': 'v'})
    ).body
    check(getattr(r, 'plaintext', None) is None and r.ciphertext_blob, 'no plaintext')
    opened = c.client.decrypt(
        kms.DecryptRequest(ciphertext_blob=r.ciphertext_blob, encryption_context={'k': 'v'})
    ).body
    check(len(base64.b64decode(opened.plaintext)) == 32, 'default 32 bytes')


def case_key_versions(c):
    key = new_key(c)
    initial = key.primary_key_version
    before = c.client.generate_data_key(kms.GenerateDataKeyRequest(key_id=key.key_id)).body
    created = c.client.create_key_version(kms.CreateKeyVersionRequest(key_id=key.key_id)).body
    new_version = created.key_version.key_version_id
    check(new_version != initial, 'a new version')
    meta = c.client.describe_key(kms.DescribeKeyRequest(key_id=key.key_id)).body.key_metadata
    check(meta.primary_key_version == new_version, 'the new version is primary')
    listed = c.client.list_key_versions(kms.ListKeyVersionsRequest(key_id=key.key_id)).body
    check(listed.total_count == 2, f'two versions, got {listed.total_count}')
    after = c.client.generate_data_key(kms.GenerateDataKeyRequest(key_id=key.key_id)).body
    check(after.key_version_id == initial, 'GenerateDataKey keeps wrapping under the initial version')
    old = c.client.decrypt(kms.DecryptRequest(ciphertext_blob=before.ciphertext_blob)).body
    check(old.plaintext == before.plaintext, 'old blobs stay decryptable')


def case_encrypt_reencrypt(c):
    source, destination = new_key(c).key_id, new_key(c).key_id
    plaintext = base64.b64encode(b'hello from the sdk suite').decode()
    sealed = c.client.encrypt(
        kms.EncryptRequest(key_id=source, plaintext=plaintext, encryption_context={'a': '1'})
    ).body
    moved = c.client.re_encrypt(
        kms.ReEncryptRequest(
            ciphertext_blob=sealed.ciphertext_blob,
            source_encryption_context={'a': '1'},
            destination_key_id=destination,
            destination_encryption_context={'b': '2'},
        )
    ).body
    check(moved.key_id == destination, 're-wrapped under the destination key')
    opened = c.client.decrypt(
        kms.DecryptRequest(ciphertext_blob=moved.ciphertext_blob, encryption_context={'b': '2'})
    ).body
    check(opened.key_id == destination and opened.plaintext == plaintext, 'round trip')


def case_aliases(c):
    key_id = new_key(c).key_id
    alias = f'alias/sdk-{uuid.uuid4().hex[:12]}'
    c.client.create_alias(kms.CreateAliasRequest(alias_name=alias, key_id=key_id))
    r = c.client.generate_data_key(kms.GenerateDataKeyRequest(key_id=alias)).body
    check(r.key_id == key_id, 'an alias resolves to its key')
    listed = c.client.list_aliases_by_key_id(kms.ListAliasesByKeyIdRequest(key_id=key_id)).body
    check([a.alias_name for a in listed.aliases.alias] == [alias], 'ListAliasesByKeyId')
    c.client.delete_alias(kms.DeleteAliasRequest(alias_name=alias))
    expect_error(
        lambda: c.client.describe_key(kms.DescribeKeyRequest(key_id=alias)),
        code_of,
        'Forbidden.AliasNotFound',
    )


def case_unknown_key(c):
    err = expect_error(
        lambda: c.client.describe_key(kms.DescribeKeyRequest(key_id=str(uuid.uuid4()))),
        code_of,
        'Forbidden.KeyNotFound',
    )
    check(err.status_code == 404, f'status {err.status_code}')


def case_wrong_secret(c):
    wrong = client_for(c.target, secret='not-the-secret')
    expect_error(lambda: wrong.list_keys(kms.ListKeysRequest()), code_of, 'SignatureDoesNotMatch')


def with_headers(headers):
    return RuntimeOptions(extends_parameters=ExtendsParameters(headers=headers))


def case_stale_timestamp(c):
    stale = with_headers({'x-acs-date': '2020-01-01T00:00:00Z'})
    expect_error(
        lambda: c.client.list_keys_with_options(kms.ListKeysRequest(), stale),
        code_of,
        'IllegalTimestamp',
    )


def case_replayed_nonce(c):
    same = with_headers({'x-acs-signature-nonce': uuid.uuid4().hex})
    c.client.list_keys_with_options(kms.ListKeysRequest(), same)
    expect_error(
        lambda: c.client.list_keys_with_options(kms.ListKeysRequest(), same),
        code_of,
        'SignatureNonceUsed',
    )


def case_other_scheme_refused(c):
    """signature_version='v4' (the gateway's ACS4) gets a 4xx that names the scheme."""
    acs4 = client_for(c.target, signature_version='v4')
    err = expect_error(
        lambda: acs4.list_keys(kms.ListKeysRequest()), code_of, 'UnsupportedSignatureAlgorithm'
    )
    check('ACS4' in str(err), f'the message names the scheme: {err}')


if __name__ == '__main__':
    run(globals(), context_of, ['other-scheme-refused'])
