// The requests Weasis sends to a DICOMweb server, made with the same JDK HTTP classes and the same header
// lines as Weasis's source (quoted in tests/clients/wire_fixtures/weasis-*.json), so that recording them through
// tests/clients/wire_recorder.py shows the JDK's exact header block and body framing.
// Run: java WeasisRequests.java <dicomweb base URL> <study> <series> <instance> <Part-10 file>
import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.io.SequenceInputStream;
import java.net.HttpURLConnection;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Collections;

public class WeasisRequests {
  static final String USER_AGENT = "Weasis/4.6.1";  // AppProperties.WEASIS_USER_AGENT
  static final String STUDY_QUERY =
      "&includefield=00080020,00080030,00080050,00080061,00080090,00081030,00100010,00100020,00100021,"
          + "00100030,00100040,0020000D,00200010";

  static void get(String url, String accept) throws Exception {
    // NetworkUtil.prepareConnection: the query or retrieve headers, then User-Agent and Weasis-User.
    HttpURLConnection connection = (HttpURLConnection) new URL(url).openConnection();
    if (accept != null) {
      connection.setRequestProperty("Accept", accept);
    }
    connection.setRequestProperty("User-Agent", USER_AGENT);
    connection.setRequestProperty("Weasis-User", "weasis");
    connection.setDoInput(true);
    int code = connection.getResponseCode();
    try (InputStream in = code < 400 ? connection.getInputStream() : connection.getErrorStream()) {
      if (in != null) {
        in.readAllBytes();
      }
    }
    System.out.println(code + " " + url);
  }

  public static void main(String[] args) throws Exception {
    String base = args[0], study = args[1], series = args[2], instance = args[3];
    Path file = Path.of(args[4]);
    // RsQueryResult: QIDO without an Accept of its own (queryHeaders are empty unless configured).
    get(base + "/studies?0020000D=" + study + STUDY_QUERY, null);
    get(base + "/studies/" + study + "/series?includefield=0008103E,00080060,0020000E,00200011,00081190", null);
    String seriesUrl = base + "/studies/" + study + "/series/" + series;
    get(seriesUrl + "/instances?includefield=00080018,00200013,00081190", null);
    // RsQueryResult: retrieve with "multipart/related;type=\"application/dicom\";" + accept.ext
    // (DicomModel sets accept.ext to "transfer-syntax=*" when none is given).
    get(seriesUrl + "/instances/" + instance, "multipart/related;type=\"application/dicom\";transfer-syntax=*");

    // weasis-dicom-tools DicomStowRS.uploadDicom(Path): a Payload of size -1, MultipartBody framing,
    // BodyPublishers.ofInputStream (so chunked), Accept from Multipart.ContentType.XML.
    String boundary = "mimeTypeBoundary";
    String header = "\r\n--" + boundary + "\r\nContent-Type: application/dicom"
        + "\r\nContent-Encoding: gzip, identity" + "\r\n\r\n";
    String end = "\r\n--" + boundary + "--";
    HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    HttpRequest request = HttpRequest.newBuilder()
        .header("Accept", "application/dicom+xml")
        .header("User-Agent", "Weasis STOWRS")
        .header("Content-Type", "multipart/related;type=\"application/dicom\";boundary=" + boundary)
        .POST(HttpRequest.BodyPublishers.ofInputStream(() -> {
          try {
            List<InputStream> parts = List.of(
                new ByteArrayInputStream(header.getBytes(StandardCharsets.UTF_8)),
                Files.newInputStream(file),
                new ByteArrayInputStream(end.getBytes(StandardCharsets.UTF_8)));
            return new SequenceInputStream(Collections.enumeration(parts));
          } catch (Exception e) {
            throw new RuntimeException(e);
          }
        }))
        .uri(new URI(base + "/studies"))
        .build();
    HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
    System.out.println(response.statusCode() + " STOW " + response.headers().firstValue("content-type").orElse(""));
  }
}
