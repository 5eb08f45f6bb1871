package fhirlupus.validator;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

/**
 * Offline FHIR instance validation of JSON resource files.
 *
 * <pre>java -jar validator.jar R4|R5 FILE... [R4|R5 FILE...]...</pre>
 *
 * A version word applies to the files after it. Prints one JSON line per file, in the order given:
 * {"file": ..., "version": ..., "issues": [{"severity", "location", "line", "messageId", "message"}]}.
 * Exit 0 whatever the files hold; 2 for a usage error. The definitions and terminology come from the
 * classpath only (HAPI's validation resources: the core package and, for R5, HL7 Terminology 5.1.0):
 * no network. A code system they do not hold (NCI Thesaurus content, MedDRA) cannot be checked, and
 * the validator says so at the severity it chooses.
 */
public final class Validate {
  private static final boolean TIMING = System.getenv("FHIR_VALIDATE_TIMING") != null;

  private Validate() {}

  public static void main(String[] args) throws Exception {
    Map<String, List<String>> byVersion = new LinkedHashMap<>();
    List<String[]> order = new ArrayList<>();
    String version = null;
    for (String arg : args) {
      if (arg.equals("R4") || arg.equals("R5")) {
        version = arg;
      } else if (version == null) {
        usage("the first argument must be R4 or R5");
      } else {
        byVersion.computeIfAbsent(version, v -> new ArrayList<>()).add(arg);
        order.add(new String[] {version, arg});
      }
    }
    if (order.isEmpty()) {
      usage("no file given");
    }

    // One thread per FHIR version: loading the definitions is most of the time, and the two load
    // independently.
    ExecutorService pool = Executors.newFixedThreadPool(byVersion.size());
    Map<String, Future<Map<String, String>>> results = new LinkedHashMap<>();
    for (Map.Entry<String, List<String>> group : byVersion.entrySet()) {
      results.put(group.getKey(), pool.submit(() -> validateAll(group.getKey(), group.getValue())));
    }
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    Map<String, Map<String, String>> lines = new LinkedHashMap<>();
    for (Map.Entry<String, Future<Map<String, String>>> result : results.entrySet()) {
      lines.put(result.getKey(), result.getValue().get());
    }
    pool.shutdown();
    for (String[] entry : order) {
      out.println(lines.get(entry[0]).get(entry[1]));
    }
    out.flush();
  }

  private static void usage(String why) {
    System.err.println("validator: " + why);
    System.err.println("usage: java -jar validator.jar R4|R5 FILE... [R4|R5 FILE...]...");
    System.exit(2);
  }

  /** The JSON line of each file, by file name (a name given twice is validated once). */
  private static Map<String, String> validateAll(String version, List<String> files) {
    long begin = System.nanoTime();
    FhirContext ctx = version.equals("R4") ? FhirContext.forR4() : FhirContext.forR5();
    // R4 reads the core definitions from hapi-fhir-validation-resources-r4; R5 from the packages of
    // hapi-fhir-validation-resources-r5 (core 5.0.0, extensions 1.0.0, hl7.terminology 5.1.0), all
    // parsed here, before the first file: most of the run's time.
    DefaultProfileValidationSupport definitions = new DefaultProfileValidationSupport(ctx);
    definitions.fetchAllStructureDefinitions();
    ValidationSupportChain chain =
        new ValidationSupportChain(
            definitions,
            new CommonCodeSystemsTerminologyService(ctx),
            new InMemoryTerminologyServerValidationSupport(ctx),
            new SnapshotGeneratingValidationSupport(ctx));
    FhirInstanceValidator module = new FhirInstanceValidator(chain);
    // Extensions of IGs that are not on the classpath (the AE Clinical Research IG's) are reported
    // as unknown (information), not refused.
    module.setAnyExtensionsAllowed(true);
    FhirValidator validator = ctx.newValidator().registerValidatorModule(module);
    timing(version + " definitions loaded", begin);

    Map<String, String> lines = new LinkedHashMap<>();
    for (String file : files) {
      if (lines.containsKey(file)) {
        continue;
      }
      long fileStart = System.nanoTime();
      List<String> issues = new ArrayList<>();
      try {
        String text = Files.readString(Path.of(file), StandardCharsets.UTF_8);
        for (SingleValidationMessage message : validator.validateWithResult(text).getMessages()) {
          issues.add(issue(message));
        }
      } catch (IOException | RuntimeException e) {
        issues.add(
            "{\"severity\":\"fatal\",\"location\":null,\"line\":null,\"messageId\":null,\"message\":"
                + quote(e.getClass().getSimpleName() + ": " + e.getMessage())
                + "}");
      }
      lines.put(
          file,
          "{\"file\":"
              + quote(file)
              + ",\"version\":"
              + quote(version)
              + ",\"issues\":["
              + String.join(",", issues)
              + "]}");
      timing(version + " " + file, fileStart);
    }
    timing(version + " all " + lines.size() + " file(s)", begin);
    return lines;
  }

  /** With FHIR_VALIDATE_TIMING set, the seconds since {@code since} on stderr. */
  private static void timing(String what, long since) {
    if (TIMING) {
      System.err.printf("validator: %s: %.2f s%n", what, (System.nanoTime() - since) / 1e9);
    }
  }

  private static String issue(SingleValidationMessage message) {
    String severity =
        message.getSeverity() == null ? "information" : message.getSeverity().getCode();
    Integer line = message.getLocationLine();
    return "{\"severity\":"
        + quote(severity)
        + ",\"location\":"
        + quote(message.getLocationString())
        + ",\"line\":"
        + (line == null ? "null" : line.toString())
        + ",\"messageId\":"
        + quote(message.getMessageId())
        + ",\"message\":"
        + quote(message.getMessage())
        + "}";
  }

  /** A JSON string literal (null for null). */
  static String quote(String text) {
    if (text == null) {
      return "null";
    }
    StringBuilder json = new StringBuilder(text.length() + 2).append('"');
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      switch (c) {
        case '"' -> json.append("\\\"");
        case '\\' -> json.append("\\\\");
        case '\n' -> json.append("\\n");
        case '\r' -> json.append("\\r");
        case '\t' -> json.append("\\t");
        default -> {
          if (c < 0x20) {
            json.append(String.format("\\u%04x", (int) c));
          } else {
            json.append(c);
          }
        }
      }
    }
    return json.append('"').toString();
  }
}
