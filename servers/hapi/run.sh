#!/usr/bin/env bash
# Run the HAPI FHIR JPA test server (FHIR R4, in-memory H2) in the foreground:
#
#   servers/hapi/run.sh [PORT] [--key=value ...]
#
# PORT defaults to $HAPI_PORT, then 18080. --key=value overrides a setting of
# src/main/resources/application.properties, e.g. --hapi.paging.default-page-size=50.
#
# FHIR base: http://127.0.0.1:PORT/fhir (loopback only). Ready when GET /fhir/metadata
# answers 200. Stop it with SIGTERM (or SIGINT); all data is in memory and is lost.
#
# Builds target/hapi-test-server.jar first when it is missing or older than pom.xml/src
# (a first build downloads the dependencies into ~/.m2; later builds work offline too).
#
# Environment:
#   HAPI_PORT        port when no argument is given (default 18080)
#   HAPI_HEAP        maximum heap (default 2g); H2 keeps the data in the heap, and the integration
#                    suite stores about 40,000 resources with their versions
#   HAPI_JAVA_OPTS   extra JVM options, appended
#   HAPI_MVN_FLAGS   extra Maven flags for the build, e.g. "-o" to build offline
#   HAPI_CDS=0       do not use a class data sharing archive (see below)
#   HAPI_SUBSCRIPTIONS=rest-hook
#                    turn on HAPI's REST-hook subscriptions (default off; see README.md)
#   JAVA_HOME        Java to use (17 or newer); default: java on PATH
#
# Class data sharing (CDS): the first run after a build records the classes it loaded and
# writes them to target/hapi-test-server.jsa.new when the JVM exits (SIGTERM is fine; this
# takes a few seconds). The next run checks that file's checksums and, if good, uses it: the
# server then starts about a third faster. A damaged or partial archive is never used.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

PORT="${1:-${HAPI_PORT:-18080}}"
shift || true
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
	echo "run.sh: bad port: $PORT" >&2
	exit 2
fi

JAR=target/hapi-test-server.jar
JSA=target/hapi-test-server.jsa
# The switched server loads other classes, and may run at the same time as a plain one from the same jar:
# each keeps its own archive, so two JVMs never write one file at exit.
case "${HAPI_SUBSCRIPTIONS:-off}" in
	off | "") ;;
	*) JSA=target/hapi-test-server-subscriptions.jsa ;;
esac
if [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

# --- build when needed (serialised, so two starts at once build only once) ---
needs_build() {
	[ ! -f "$JAR" ] || [ -n "$(find pom.xml src -newer "$JAR" -print -quit)" ]
}
if needs_build; then
	mkdir -p target
	exec 9>target/.build.lock
	flock 9
	if needs_build; then
		echo "run.sh: building $JAR ..." >&2
		# Unlink the old jar first: maven-jar-plugin would overwrite it in place (same inode),
		# and a server still running from it would then fail to load its classes.
		rm -f "$JAR"
		# shellcheck disable=SC2086
		nice mvn -q -B ${HAPI_MVN_FLAGS:-} package -DskipTests >&2
		rm -f target/*.jsa target/*.jsa.new target/*.jsa.failed
	fi
	flock -u 9
	exec 9>&-
fi

# --- class data sharing archive ---
CDS_OPTS=()
if [ "${HAPI_CDS:-1}" != 0 ]; then
	for f in "$JSA" "$JSA.new" "$JSA.failed"; do
		# An archive made for an older jar is useless.
		if [ -e "$f" ] && [ "$f" -ot "$JAR" ]; then rm -f "$f"; fi
	done
	if [ -f "$JSA.new" ] && [ ! -f "$JSA" ]; then
		if "$JAVA" -XX:SharedArchiveFile="$JSA.new" -XX:+VerifySharedSpaces -Xshare:on \
			-Xlog:disable -XX:-CreateCoredumpOnCrash -XX:ErrorFile=target/hs_err_cds_check.log \
			-cp "$JAR" -version >/dev/null 2>&1; then
			mv -f "$JSA.new" "$JSA"
		else
			# Partial (JVM killed while writing) or damaged: do not retry for this jar.
			rm -f "$JSA.new" target/hs_err_cds_check.log
			touch "$JSA.failed"
		fi
	fi
	if [ -f "$JSA" ]; then
		CDS_OPTS=(-XX:SharedArchiveFile="$JSA" -Xlog:cds=off -Xlog:cds+dynamic=off)
	elif [ ! -f "$JSA.failed" ]; then
		rm -f "$JSA.new"
		CDS_OPTS=(-XX:ArchiveClassesAtExit="$JSA.new" -XX:+VerifySharedSpaces -Xlog:cds=off -Xlog:cds+dynamic=off)
	fi
fi

# C1-only JIT and the serial GC: on 2 cores this halves the start-up time and is also
# faster for the short request bursts of a test run.
# shellcheck disable=SC2086
exec "$JAVA" \
	-Xmx"${HAPI_HEAP:-2g}" -XX:+ExitOnOutOfMemoryError \
	-XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
	"${CDS_OPTS[@]}" \
	-Djava.awt.headless=true \
	-Dnet.bytebuddy.experimental=true \
	${HAPI_JAVA_OPTS:-} \
	-jar "$JAR" --port "$PORT" "$@"
