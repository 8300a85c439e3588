"""Runs the instance-SDK cases of test/kms-instance-api/instance-sdks.test.ts with the
official Python instance SDK (alibabacloud-dkms-gcs) at its default settings.
Input: a JSON file (argv[1]); output: one JSON object of results on stdout."""

import base64
import hashlib
import json
import sys
import tempfile
from email.utils import formatdate
import time

import requests
from openapi.models import Config
from openapi_credential.client import Client as CredentialClient
from openapi_credential.models import Config as CredentialConfig
from openapi_util.client import Client as UtilClient
from openapi_util.protobuf import api_pb2
from sdk.client import Client
from sdk import models
from Tea.exceptions import TeaException


def digest(data):
    return hashlib.sha256(data).hexdigest()


def failure(err):
    if isinstance(err, TeaException):
        data = err.data or {}
        return {"ok": False, "code": err.code, "message": err.message,
                "httpCode": data.get("httpCode"), "requestId": data.get("requestId")}
    return {"ok": False, "error": repr(err)}


def attempt(fn):
    try:
        return fn()
    except Exception as err:  # every failure is reported, the Jest test judges it
        return failure(err)


def client(inp, name, ca_file):
    ck = inp["clients"][name]
    return Client(Config(protocol="https", client_key_content=ck["content"],
                         password=ck["password"], endpoint=inp["endpoint"], ca_file_path=ca_file))


def run_before(inp, good, ca_file, out):
    key_id = inp["keyId"]
    aad = b"orders/payments"
    gen = good.advance_generate_data_key(models.AdvanceGenerateDataKeyRequest(
        key_id=key_id, number_of_bytes=32, aad=aad))
    out["advanceGenerateDataKey"] = {
        "ok": True, "keyId": gen.key_id, "keyVersionId": gen.key_version_id,
        "algorithm": gen.algorithm, "ivBytes": len(gen.iv), "plaintextBytes": len(gen.plaintext),
        "requestId": gen.request_id, "blob": base64.b64encode(gen.ciphertext_blob).decode(),
        "aad": base64.b64encode(aad).decode(), "plaintextDigest": digest(gen.plaintext)}

    def same():
        dec = good.advance_decrypt(models.AdvanceDecryptRequest(ciphertext_blob=gen.ciphertext_blob, aad=aad))
        return {"ok": True, "matches": dec.plaintext == gen.plaintext,
                "keyVersionId": dec.key_version_id, "keyId": dec.key_id}
    out["advanceDecryptSameAad"] = attempt(same)

    def other():
        good.advance_decrypt(models.AdvanceDecryptRequest(ciphertext_blob=gen.ciphertext_blob, aad=b"orders/other"))
        return {"ok": True}
    out["advanceDecryptOtherAad"] = attempt(other)

    message = b"attack at dawn"

    def advance_encrypt():
        enc = good.advance_encrypt(models.AdvanceEncryptRequest(key_id=key_id, plaintext=message, aad=aad))
        back = good.advance_decrypt(models.AdvanceDecryptRequest(ciphertext_blob=enc.ciphertext_blob, aad=aad))
        return {"ok": True, "keyVersionId": enc.key_version_id, "matches": back.plaintext == message}
    out["advanceEncrypt"] = attempt(advance_encrypt)

    def data_key():
        dk = good.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, number_of_bytes=32, aad=aad))
        plain = good.decrypt(models.DecryptRequest(key_id=key_id, ciphertext_blob=dk.ciphertext_blob,
                                                   iv=dk.iv, algorithm=dk.algorithm, aad=aad))
        return {"ok": True, "ivBytes": len(dk.iv), "algorithm": dk.algorithm,
                "plaintextBytes": len(dk.plaintext), "matches": plain.plaintext == dk.plaintext}
    out["generateDataKeyDecrypt"] = attempt(data_key)

    def encrypt():
        e = good.encrypt(models.EncryptRequest(key_id=key_id, plaintext=message, aad=aad))
        plain = good.decrypt(models.DecryptRequest(key_id=key_id, ciphertext_blob=e.ciphertext_blob,
                                                   iv=e.iv, algorithm=e.algorithm, aad=aad))
        return {"ok": True, "ivBytes": len(e.iv), "matches": plain.plaintext == message}
    out["encryptDecrypt"] = attempt(encrypt)

    def random():
        r = good.generate_random(models.GenerateRandomRequest(length=24))
        return {"ok": True, "bytes": len(r.random)}
    out["generateRandom"] = attempt(random)

    for name in ["foreign", "expired", "narrow", "network"]:
        def refused(name=name):
            client(inp, name, ca_file).advance_generate_data_key(
                models.AdvanceGenerateDataKeyRequest(key_id=key_id, number_of_bytes=32))
            return {"ok": True}
        out[name] = attempt(refused)
    out["skewedDate"] = attempt(lambda: skewed(inp, ca_file))


def skewed(inp, ca_file):
    """One request built and signed by the SDK's own parts with a Date an hour old
    (the SDK's client always stamps the current time)."""
    ck = inp["clients"]["good"]
    cred = CredentialClient(CredentialConfig(type="rsa_key_pair", client_key_content=ck["content"],
                                             password=ck["password"]))
    body = api_pb2.GenerateRandomRequest(Length=16).SerializeToString()
    headers = {
        "accept": "application/x-protobuf",
        "date": formatdate(time.time() - 3600, usegmt=True),
        "x-kms-apiversion": "dkms-gcs-0.2",
        "x-kms-apiname": "GenerateRandom",
        "x-kms-signaturemethod": "RSA_PKCS1_SHA_256",
        "x-kms-acccesskeyid": cred.get_access_key_id(),
        "content-type": "application/x-protobuf",
        "content-sha256": hashlib.sha256(body).hexdigest().upper(),
    }
    headers["authorization"] = cred.get_signature(UtilClient.get_string_to_sign("POST", "/", headers, {}))
    resp = requests.post("https://%s/" % inp["endpoint"], data=body, headers=headers, verify=ca_file)
    parsed = UtilClient.get_err_message(resp.content)
    return {"ok": resp.status_code == 200, "httpCode": resp.status_code,
            "code": parsed["Code"], "message": parsed["Message"]}


def run_after(inp, good, out):
    blob = base64.b64decode(inp["oldBlob"])
    aad = base64.b64decode(inp["oldAad"])

    def old():
        dec = good.advance_decrypt(models.AdvanceDecryptRequest(ciphertext_blob=blob, aad=aad))
        return {"ok": True, "matches": digest(dec.plaintext) == inp["oldDigest"],
                "keyVersionId": dec.key_version_id}
    out["oldCiphertext"] = attempt(old)

    def fresh():
        gen = good.advance_generate_data_key(models.AdvanceGenerateDataKeyRequest(
            key_id=inp["keyId"], number_of_bytes=32, aad=aad))
        return {"ok": True, "keyVersionId": gen.key_version_id}
    out["afterRotation"] = attempt(fresh)


def open_secret(inp, good):
    """Decrypts a DataKey's Secret as docs/kms-api.md tells an application to."""
    secret = inp["secret"]
    blob = base64.b64decode(secret["ciphertextBlob"])
    if secret["flow"] == "Advance":
        r = good.advance_decrypt(models.AdvanceDecryptRequest(
            ciphertext_blob=blob, aad=base64.b64decode(secret["aad"])))
    else:
        r = good.decrypt(models.DecryptRequest(
            key_id=secret["keyId"], ciphertext_blob=blob, algorithm="AES_GCM",
            aad=secret["encryptionContext"].encode("utf-8")))
    return {"ok": True, "plaintextDigest": digest(r.plaintext)}


def main():
    with open(sys.argv[1]) as f:
        inp = json.load(f)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        ca.write(inp["ca"])
        ca.flush()
        good = client(inp, "good", ca.name)
        out = {}
        if inp.get("phase") == "after":
            run_after(inp, good, out)
        elif inp.get("phase") == "secret":
            out["secretDecrypt"] = attempt(lambda: open_secret(inp, good))
        else:
            try:
                run_before(inp, good, ca.name, out)
            except Exception as err:
                out["advanceGenerateDataKey"] = failure(err)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
