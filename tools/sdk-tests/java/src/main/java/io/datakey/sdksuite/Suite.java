package io.datakey.sdksuite;

import com.aliyun.kms20160120.Client;
import com.aliyun.kms20160120.models.*;
import com.aliyun.tea.TeaException;
import com.aliyun.teaopenapi.models.Config;
import com.aliyun.teautil.models.ExtendsParameters;
import com.aliyun.teautil.models.RuntimeOptions;
import com.google.gson.Gson;
import com.google.gson.reflect.TypeToken;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

/**
 * com.aliyun:kms20160120 (tea-openapi, ACS3-HMAC-SHA256 by default) against
 * `datakey kms serve`: every case against every target in KMS_TARGETS, one JSON
 * line per case (see ../README.md).
 */
public final class Suite {
  record Target(String name, String endpoint, String protocol, String ca) {}

  interface Body {
    void run() throws Exception;
  }

  record Case(String name, Body body) {}

  static final class CaseFailed extends RuntimeException {
    CaseFailed(String message) {
      super(message);
    }
  }

  static void check(boolean ok, String what) {
    if (!ok) throw new CaseFailed(what);
  }

  static TeaException expectCode(Body call, String code) throws Exception {
    try {
      call.run();
    } catch (TeaException e) {
      check(code.equals(e.getCode()), "expected " + code + ", got " + e.getCode() + ": " + e.getMessage());
      return e;
    }
    throw new CaseFailed("expected error " + code + ", but the call succeeded");
  }

  /** The SDK at its defaults: endpoint, protocol and, for HTTPS, the CA (PEM text). */
  static Client clientFor(Target t, String secret) throws Exception {
    Config config =
        new Config()
            .setAccessKeyId(System.getenv("KMS_ACCESS_KEY_ID"))
            .setAccessKeySecret(secret != null ? secret : System.getenv("KMS_ACCESS_KEY_SECRET"))
            .setEndpoint(t.endpoint())
            .setProtocol(t.protocol())
            .setRegionId("cn-hangzhou");
    if (t.ca() != null) config.setCa(Files.readString(Path.of(t.ca())));
    return new Client(config);
  }

  static int b64len(String s) {
    return Base64.getDecoder().decode(s).length;
  }

  static RuntimeOptions withHeader(String name, String value) {
    return new RuntimeOptions()
        .setExtendsParameters(new ExtendsParameters().setHeaders(Map.of(name, value)));
  }

  static List<Case> cases(Target t) throws Exception {
    Client c = clientFor(t, null);
    List<Case> cases = new ArrayList<>();
    cases.add(new Case("create-key", () -> {
      var meta = newKey(c);
      check("Aliyun_AES_256".equals(meta.getKeySpec()) && "Enabled".equals(meta.getKeyState()), "metadata");
      var d = c.describeKey(new DescribeKeyRequest().setKeyId(meta.getKeyId())).getBody().getKeyMetadata();
      check(d.getArn().endsWith("key/" + meta.getKeyId()), "arn");
    }));
    cases.add(new Case("generate-data-key", () -> {
      String keyId = newKey(c).getKeyId();
      Map<String, String> context = Map.of("app", "orders", "tenant", "a b*~/");
      var r16 = c.generateDataKey(new GenerateDataKeyRequest().setKeyId(keyId).setKeySpec("AES_128")).getBody();
      check(b64len(r16.getPlaintext()) == 16, "AES_128 gives 16 bytes");
      var r = c.generateDataKey(new GenerateDataKeyRequest().setKeyId(keyId).setNumberOfBytes(48).setEncryptionContext(context)).getBody();
      check(keyId.equals(r.getKeyId()) && b64len(r.getPlaintext()) == 48, "NumberOfBytes=48");
      var opened = c.decrypt(new DecryptRequest().setCiphertextBlob(r.getCiphertextBlob()).setEncryptionContext(context)).getBody();
      check(opened.getPlaintext().equals(r.getPlaintext()), "decrypt");
      expectCode(() -> c.decrypt(new DecryptRequest().setCiphertextBlob(r.getCiphertextBlob()).setEncryptionContext(Map.of("app", "x"))), "InvalidParameter");
    }));
    cases.add(new Case("generate-data-key-without-plaintext", () -> {
      Map<String, String> context = Map.of("k", "v");
      var r = c.generateDataKeyWithoutPlaintext(new GenerateDataKeyWithoutPlaintextRequest().setKeyId(newKey(c).getKeyId()).setEncryptionContext(context)).getBody();
      var opened = c.decrypt(new DecryptRequest().setCiphertextBlob(r.getCiphertextBlob()).setEncryptionContext(context)).getBody();
      check(b64len(opened.getPlaintext()) == 32, "default 32 bytes");
    }));
    cases.add(new Case("key-versions", () -> {
      var key = newKey(c);
      String initial = key.getPrimaryKeyVersion();
      var before = c.generateDataKey(new GenerateDataKeyRequest().setKeyId(key.getKeyId())).getBody();
      String created = c.createKeyVersion(new CreateKeyVersionRequest().setKeyId(key.getKeyId())).getBody().getKeyVersion().getKeyVersionId();
      check(!created.equals(initial), "a new version");
      var meta = c.describeKey(new DescribeKeyRequest().setKeyId(key.getKeyId())).getBody().getKeyMetadata();
      check(created.equals(meta.getPrimaryKeyVersion()), "the new version is primary");
      var listed = c.listKeyVersions(new ListKeyVersionsRequest().setKeyId(key.getKeyId())).getBody();
      check(listed.getTotalCount() == 2, "two versions, got " + listed.getTotalCount());
      var after = c.generateDataKey(new GenerateDataKeyRequest().setKeyId(key.getKeyId())).getBody();
      check(initial.equals(after.getKeyVersionId()), "GenerateDataKey keeps the initial version");
      var old = c.decrypt(new DecryptRequest().setCiphertextBlob(before.getCiphertextBlob())).getBody();
      check(old.getPlaintext().equals(before.getPlaintext()), "old blobs stay decryptable");
    }));
    cases.add(new Case("encrypt-reencrypt", () -> {
      String source = newKey(c).getKeyId();
      String destination = newKey(c).getKeyId();
      String plaintext = Base64.getEncoder().encodeToString("hello from the sdk suite".getBytes(StandardCharsets.UTF_8));
      var sealed = c.encrypt(new EncryptRequest().setKeyId(source).setPlaintext(plaintext).setEncryptionContext(Map.of("a", "1"))).getBody();
      var moved = c.reEncrypt(new ReEncryptRequest().setCiphertextBlob(sealed.getCiphertextBlob())
          .setSourceEncryptionContext(Map.of("a", "1")).setDestinationKeyId(destination)
          .setDestinationEncryptionContext(Map.of("b", "2"))).getBody();
      check(destination.equals(moved.getKeyId()), "re-wrapped under the destination key");
      var opened = c.decrypt(new DecryptRequest().setCiphertextBlob(moved.getCiphertextBlob()).setEncryptionContext(Map.of("b", "2"))).getBody();
      check(plaintext.equals(opened.getPlaintext()) && destination.equals(opened.getKeyId()), "round trip");
    }));
    cases.add(new Case("aliases", () -> {
      String keyId = newKey(c).getKeyId();
      String alias = "alias/sdk-" + UUID.randomUUID().toString().substring(0, 12);
      c.createAlias(new CreateAliasRequest().setAliasName(alias).setKeyId(keyId));
      check(keyId.equals(c.generateDataKey(new GenerateDataKeyRequest().setKeyId(alias)).getBody().getKeyId()), "an alias resolves to its key");
      var listed = c.listAliasesByKeyId(new ListAliasesByKeyIdRequest().setKeyId(keyId)).getBody().getAliases().getAlias();
      check(listed.size() == 1 && alias.equals(listed.get(0).getAliasName()), "ListAliasesByKeyId");
      c.deleteAlias(new DeleteAliasRequest().setAliasName(alias));
      expectCode(() -> c.describeKey(new DescribeKeyRequest().setKeyId(alias)), "Forbidden.AliasNotFound");
    }));
    cases.add(new Case("unknown-key", () -> {
      var e = expectCode(() -> c.describeKey(new DescribeKeyRequest().setKeyId(UUID.randomUUID().toString())), "Forbidden.KeyNotFound");
      check(Integer.valueOf(404).equals(e.getStatusCode()), "status " + e.getStatusCode());
    }));
    cases.add(new Case("wrong-secret", () -> {
      Client wrong = clientFor(t, "not-the-secret");
      expectCode(() -> wrong.listKeys(new ListKeysRequest()), "SignatureDoesNotMatch");
    }));
    cases.add(new Case("stale-timestamp", () ->
        expectCode(() -> c.listKeysWithOptions(new ListKeysRequest(), withHeader("x-acs-date", "2020-01-01T00:00:00Z")), "IllegalTimestamp")));
    cases.add(new Case("replayed-nonce", () -> {
      RuntimeOptions same = withHeader("x-acs-signature-nonce", UUID.randomUUID().toString().replace("-", ""));
      c.listKeysWithOptions(new ListKeysRequest(), same);
      expectCode(() -> c.listKeysWithOptions(new ListKeysRequest(), same), "SignatureNonceUsed");
    }));
    return cases;
  }

  static CreateKeyResponseBody.CreateKeyResponseBodyKeyMetadata newKey(Client c) throws Exception {
    return c.createKey(new CreateKeyRequest().setDescription("sdk suite")).getBody().getKeyMetadata();
  }

  public static void main(String[] args) throws Exception {
    Gson gson = new Gson();
    List<Target> targets = gson.fromJson(System.getenv("KMS_TARGETS"), new TypeToken<List<Target>>() {}.getType());
    int failed = 0;
    for (Target t : targets) {
      for (Case c : cases(t)) {
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("target", t.name());
        result.put("case", c.name());
        try {
          c.body().run();
          result.put("ok", true);
        } catch (Exception e) {
          failed++;
          result.put("ok", false);
          String message = e.getClass().getSimpleName() + ": " + e.getMessage();
          result.put("error", message.length() > 2000 ? message.substring(0, 2000) : message);
        }
        System.out.println(gson.toJson(result));
      }
    }
    System.exit(failed > 0 ? 1 : 0);
  }
}
