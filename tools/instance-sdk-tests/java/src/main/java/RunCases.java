import com.aliyun.dkms.gcs.openapi.models.Config;
import com.aliyun.dkms.gcs.openapi.util.protobuf.ApiModels;
import com.aliyun.dkms.gcs.sdk.Client;
import com.aliyun.dkms.gcs.sdk.models.*;
import com.aliyun.tea.TeaException;
import com.google.gson.Gson;
import com.google.gson.JsonObject;
import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.cert.CertificateFactory;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * Runs the instance-SDK cases of test/kms-instance-api with the official Java
 * instance SDK (com.aliyun:alibabacloud-dkms-gcs-sdk) at its default settings.
 * Input: a JSON file (args[0]); output: one JSON object of results on stdout.
 */
public class RunCases {
  interface Case {
    Map<String, Object> run() throws Exception;
  }

  static JsonObject in;
  static final Map<String, Object> out = new LinkedHashMap<>();

  static Client client(String name) throws Exception {
    JsonObject ck = in.getAsJsonObject("clients").getAsJsonObject(name);
    return new Client(new Config()
        .setProtocol("https")
        .setEndpoint(in.get("endpoint").getAsString())
        .setClientKeyContent(ck.get("content").getAsString())
        .setPassword(ck.get("password").getAsString())
        .setCa(in.get("ca").getAsString()));
  }

  static String digest(byte[] data) throws Exception {
    StringBuilder hex = new StringBuilder();
    for (byte b : MessageDigest.getInstance("SHA-256").digest(data)) hex.append(String.format("%02x", b));
    return hex.toString();
  }

  static Map<String, Object> result(Object... pairs) {
    Map<String, Object> r = new LinkedHashMap<>();
    for (int i = 0; i < pairs.length; i += 2) r.put((String) pairs[i], pairs[i + 1]);
    return r;
  }

  static void attempt(String name, Case c) {
    try {
      out.put(name, c.run());
    } catch (TeaException e) {
      Map<String, Object> data = e.getData() == null ? new HashMap<>() : e.getData();
      Object http = data.get("httpCode");
      out.put(name, result("ok", false, "code", e.getCode(), "message", e.getMessage(),
          "httpCode", http == null ? null : ((Number) http).intValue(), "requestId", data.get("requestId")));
    } catch (Exception e) {
      out.put(name, result("ok", false, "error", e.toString()));
    }
  }

  public static void main(String[] args) throws Exception {
    in = new Gson().fromJson(Files.readString(Path.of(args[0])), JsonObject.class);
    String phase = in.has("phase") ? in.get("phase").getAsString() : "before";
    if (phase.equals("after")) after();
    else if (phase.equals("secret")) attempt("secretDecrypt", RunCases::openSecret);
    else before();
    System.out.println(new Gson().toJson(out));
  }

  static void before() throws Exception {
    Client good = client("good");
    String keyId = in.get("keyId").getAsString();
    byte[] aad = "orders/payments".getBytes(StandardCharsets.UTF_8);
    AdvanceGenerateDataKeyResponse[] gen = new AdvanceGenerateDataKeyResponse[1];
    attempt("advanceGenerateDataKey", () -> {
      gen[0] = good.advanceGenerateDataKey(new AdvanceGenerateDataKeyRequest()
          .setKeyId(keyId).setNumberOfBytes(32).setAad(aad));
      AdvanceGenerateDataKeyResponse g = gen[0];
      return result("ok", true, "keyId", g.getKeyId(), "keyVersionId", g.getKeyVersionId(),
          "algorithm", g.getAlgorithm(), "ivBytes", g.getIv().length, "plaintextBytes", g.getPlaintext().length,
          "requestId", g.getRequestId(), "blob", Base64.getEncoder().encodeToString(g.getCiphertextBlob()),
          "aad", Base64.getEncoder().encodeToString(aad), "plaintextDigest", digest(g.getPlaintext()));
    });
    if (gen[0] == null) return;
    attempt("advanceDecryptSameAad", () -> {
      AdvanceDecryptResponse d = good.advanceDecrypt(new AdvanceDecryptRequest()
          .setCiphertextBlob(gen[0].getCiphertextBlob()).setAad(aad));
      return result("ok", true, "matches", Arrays.equals(d.getPlaintext(), gen[0].getPlaintext()),
          "keyVersionId", d.getKeyVersionId(), "keyId", d.getKeyId());
    });
    attempt("advanceDecryptOtherAad", () -> {
      good.advanceDecrypt(new AdvanceDecryptRequest().setCiphertextBlob(gen[0].getCiphertextBlob())
          .setAad("orders/other".getBytes(StandardCharsets.UTF_8)));
      return result("ok", true);
    });
    byte[] message = "attack at dawn".getBytes(StandardCharsets.UTF_8);
    attempt("advanceEncrypt", () -> {
      AdvanceEncryptResponse e = good.advanceEncrypt(new AdvanceEncryptRequest()
          .setKeyId(keyId).setPlaintext(message).setAad(aad));
      AdvanceDecryptResponse d = good.advanceDecrypt(new AdvanceDecryptRequest()
          .setCiphertextBlob(e.getCiphertextBlob()).setAad(aad));
      return result("ok", true, "keyVersionId", e.getKeyVersionId(), "matches", Arrays.equals(d.getPlaintext(), message));
    });
    attempt("generateDataKeyDecrypt", () -> {
      GenerateDataKeyResponse dk = good.generateDataKey(new GenerateDataKeyRequest()
          .setKeyId(keyId).setNumberOfBytes(32).setAad(aad));
      DecryptResponse d = good.decrypt(new DecryptRequest().setKeyId(keyId)
          .setCiphertextBlob(dk.getCiphertextBlob()).setIv(dk.getIv()).setAlgorithm(dk.getAlgorithm()).setAad(aad));
      return result("ok", true, "ivBytes", dk.getIv().length, "algorithm", dk.getAlgorithm(),
          "plaintextBytes", dk.getPlaintext().length, "matches", Arrays.equals(d.getPlaintext(), dk.getPlaintext()));
    });
    attempt("encryptDecrypt", () -> {
      EncryptResponse e = good.encrypt(new EncryptRequest().setKeyId(keyId).setPlaintext(message).setAad(aad));
      DecryptResponse d = good.decrypt(new DecryptRequest().setKeyId(keyId)
          .setCiphertextBlob(e.getCiphertextBlob()).setIv(e.getIv()).setAlgorithm(e.getAlgorithm()).setAad(aad));
      return result("ok", true, "ivBytes", e.getIv().length, "matches", Arrays.equals(d.getPlaintext(), message));
    });
    attempt("generateRandom", () -> {
      GenerateRandomResponse r = good.generateRandom(new GenerateRandomRequest().setLength(24));
      return result("ok", true, "bytes", r.getRandom().length);
    });
    for (String name : new String[] {"foreign", "expired", "narrow", "network"}) {
      attempt(name, () -> {
        client(name).advanceGenerateDataKey(new AdvanceGenerateDataKeyRequest().setKeyId(keyId).setNumberOfBytes(32));
        return result("ok", true);
      });
    }
    attempt("skewedDate", RunCases::skewed);
  }

  static void after() throws Exception {
    Client good = client("good");
    byte[] blob = Base64.getDecoder().decode(in.get("oldBlob").getAsString());
    byte[] aad = Base64.getDecoder().decode(in.get("oldAad").getAsString());
    attempt("oldCiphertext", () -> {
      AdvanceDecryptResponse d = good.advanceDecrypt(new AdvanceDecryptRequest().setCiphertextBlob(blob).setAad(aad));
      return result("ok", true, "matches", digest(d.getPlaintext()).equals(in.get("oldDigest").getAsString()),
          "keyVersionId", d.getKeyVersionId());
    });
    attempt("afterRotation", () -> {
      AdvanceGenerateDataKeyResponse g = good.advanceGenerateDataKey(new AdvanceGenerateDataKeyRequest()
          .setKeyId(in.get("keyId").getAsString()).setNumberOfBytes(32).setAad(aad));
      return result("ok", true, "keyVersionId", g.getKeyVersionId());
    });
  }

  /** Decrypts a DataKey's Secret as docs/kms-api.md tells an application to. */
  static Map<String, Object> openSecret() throws Exception {
    JsonObject secret = in.getAsJsonObject("secret");
    byte[] blob = Base64.getDecoder().decode(secret.get("ciphertextBlob").getAsString());
    byte[] plaintext;
    if (secret.get("flow").getAsString().equals("Advance")) {
      plaintext = client("good").advanceDecrypt(new AdvanceDecryptRequest().setCiphertextBlob(blob)
          .setAad(Base64.getDecoder().decode(secret.get("aad").getAsString()))).getPlaintext();
    } else {
      plaintext = client("good").decrypt(new DecryptRequest().setKeyId(secret.get("keyId").getAsString())
          .setCiphertextBlob(blob).setAlgorithm("AES_GCM")
          .setAad(secret.get("encryptionContext").getAsString().getBytes(StandardCharsets.UTF_8))).getPlaintext();
    }
    return result("ok", true, "plaintextDigest", digest(plaintext));
  }

  /**
   * One request built and signed by the SDK's own parts (protobuf model,
   * StringToSign, client-key signer, error decoder) with a Date an hour old:
   * the SDK's client always stamps the current time.
   */
  static Map<String, Object> skewed() throws Exception {
    JsonObject ck = in.getAsJsonObject("clients").getAsJsonObject("good");
    com.aliyun.dkms.gcs.openapi.credential.Client cred = new com.aliyun.dkms.gcs.openapi.credential.Client(
        new com.aliyun.dkms.gcs.openapi.credential.models.Config().setType("rsa_key_pair")
            .setClientKeyContent(ck.get("content").getAsString()).setPassword(ck.get("password").getAsString()));
    byte[] body = ApiModels.GenerateRandomRequest.newBuilder().setLength(16).build().toByteArray();
    StringBuilder sha = new StringBuilder();
    for (byte b : MessageDigest.getInstance("SHA-256").digest(body)) sha.append(String.format("%02X", b));
    Map<String, String> headers = new HashMap<>();
    headers.put("accept", "application/x-protobuf");
    headers.put("date", DateTimeFormatter.RFC_1123_DATE_TIME.format(ZonedDateTime.now(ZoneOffset.UTC).minusHours(1)));
    headers.put("x-kms-apiversion", "dkms-gcs-0.2");
    headers.put("x-kms-apiname", "GenerateRandom");
    headers.put("x-kms-signaturemethod", "RSA_PKCS1_SHA_256");
    headers.put("x-kms-acccesskeyid", cred.getAccessKeyId());
    headers.put("content-type", "application/x-protobuf");
    headers.put("content-sha256", sha.toString());
    headers.put("authorization", cred.getSignature(
        com.aliyun.dkms.gcs.openapi.util.Client.getStringToSign("POST", "/", headers, new HashMap<>())));

    KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
    trust.load(null, null);
    trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509")
        .generateCertificate(new ByteArrayInputStream(in.get("ca").getAsString().getBytes(StandardCharsets.US_ASCII))));
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(trust);
    SSLContext tls = SSLContext.getInstance("TLS");
    tls.init(null, tmf.getTrustManagers(), null);
    HttpsURLConnection conn = (HttpsURLConnection) new URL("https://" + in.get("endpoint").getAsString() + "/").openConnection();
    conn.setSSLSocketFactory(tls.getSocketFactory());
    conn.setRequestMethod("POST");
    conn.setDoOutput(true);
    for (Map.Entry<String, String> h : headers.entrySet()) conn.setRequestProperty(h.getKey(), h.getValue());
    try (OutputStream os = conn.getOutputStream()) {
      os.write(body);
    }
    int status = conn.getResponseCode();
    InputStream stream = status >= 400 ? conn.getErrorStream() : conn.getInputStream();
    Map<String, Object> parsed = com.aliyun.dkms.gcs.openapi.util.Client.getErrMessage(stream.readAllBytes());
    return result("ok", status == 200, "httpCode", status, "code", parsed.get("Code"), "message", parsed.get("Message"));
  }
}
