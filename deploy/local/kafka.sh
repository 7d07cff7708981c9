#!/usr/bin/env bash
# Local single-node Kafka (KRaft, combined broker+controller) assembled from Maven Central jars.
#   deploy/local/kafka.sh up|down|kill|status|bootstrap   (kill: SIGKILL, for chaos runs)
# Jars, data and logs live under $KAFKA_LOCAL_HOME (default: <repo>/.local/kafka, git-ignored);
# KAFKA_LOCAL_LIBS points several homes at one jar folder (default: $KAFKA_LOCAL_HOME/libs).
# When KAFKA_BOOTSTRAP_SERVERS is set, nothing is started: that cluster is used as it is.
# KAFKA_LOCAL_HOST: the address the plaintext listener binds and advertises (default 127.0.0.1;
# the multi-pod test runs a broker in a network namespace of its own at that namespace's address).
#
# Secure mode, KAFKA_LOCAL_SECURITY=tls (default plaintext):
#   KAFKA_LOCAL_PORT       SASL_SSL listener, SCRAM-SHA-512 (the address `up` prints)
#   KAFKA_LOCAL_MTLS_PORT  SSL listener that requires a client certificate (default port+2)
#   KAFKA_LOCAL_TLS_DIR    ca.crt, broker.crt (SAN IP:127.0.0.1) and broker.key (PEM, unencrypted
#                          PKCS#8), made by the caller; default $KAFKA_LOCAL_HOME/tls
#   KAFKA_LOCAL_ADMIN_PASSWORD  password of SCRAM user `admin` (inter-broker and readiness)
#   KAFKA_LOCAL_SCRAM_USERS     more SCRAM-SHA-512 users, "name:password name:password"
# SCRAM users are written when the storage is formatted: change them with a fresh home.
# The controller listener stays PLAINTEXT on 127.0.0.1; brokers talk SASL_SSL as `admin`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${KAFKA_LOCAL_HOME:-$repo/.local/kafka}
host=${KAFKA_LOCAL_HOST:-127.0.0.1}
port=${KAFKA_LOCAL_PORT:-9092}
controller_port=${KAFKA_LOCAL_CONTROLLER_PORT:-9093}
python=${PYTHON:-$repo/.venv/bin/python}
libs=${KAFKA_LOCAL_LIBS:-$home/libs}
security=${KAFKA_LOCAL_SECURITY:-plaintext}
mtls_port=${KAFKA_LOCAL_MTLS_PORT:-$((port + 2))}
tls_dir=${KAFKA_LOCAL_TLS_DIR:-$home/tls}
admin_password=${KAFKA_LOCAL_ADMIN_PASSWORD:-admin-secret}
data=$home/data
logs=$home/logs
pidfile=$home/kafka.pid
props=$home/server.properties
bootstrap=$host:$port

log() { echo "[kafka-local] $*" >&2; }

running() {
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

fetch_jars() {
  if [[ -f $libs/.complete ]]; then return; fi
  command -v mvn >/dev/null || { log "mvn not found: install Maven (apt-get install maven)"; exit 1; }
  log "fetching Kafka jars from Maven Central into $libs"
  mkdir -p "$libs"
  # stdout carries only the bootstrap address: Maven's chatter goes to stderr.
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
}

write_config() {
  mkdir -p "$data" "$logs"
  if [[ $security == tls ]]; then
    write_tls_listeners
  else
    cat > "$props" <<PROPS
listeners=PLAINTEXT://$host:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://$host:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
PROPS
  fi
  cat >> "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
controller.listener.names=CONTROLLER
log.dirs=$data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  chmod 600 "$props"  # in secure mode it holds the admin password
  cat > "$home/log4j2.properties" <<'LOG4J'
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
LOG4J
}

write_tls_listeners() {
  local file
  for file in ca.crt broker.crt broker.key; do
    [[ -f $tls_dir/$file ]] || { log "secure mode needs $tls_dir/$file (KAFKA_LOCAL_TLS_DIR)"; exit 1; }
  done
  # A PEM keystore is one file: the private key (unencrypted PKCS#8) and the certificate chain.
  cat "$tls_dir/broker.key" "$tls_dir/broker.crt" > "$home/broker-keystore.pem"
  chmod 600 "$home/broker-keystore.pem"
  cat > "$props" <<PROPS
listeners=SASL_SSL://127.0.0.1:$port,SSL://127.0.0.1:$mtls_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$port,SSL://127.0.0.1:$mtls_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
ssl.keystore.type=PEM
ssl.keystore.location=$home/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.crt
ssl.endpoint.identification.algorithm=https
listener.name.ssl.ssl.client.auth=required
super.users=User:admin
PROPS
}

scram_args() {
  # One --add-scram per user; iterations above Kafka's minimum of 4096.
  echo "--add-scram"
  echo "SCRAM-SHA-512=[name=admin,password=$admin_password]"
  local pair
  for pair in ${KAFKA_LOCAL_SCRAM_USERS:-}; do
    echo "--add-scram"
    echo "SCRAM-SHA-512=[name=${pair%%:*},password=${pair#*:}]"
  done
}

java_cmd() {
  java -Xms256m -Xmx1g -Dkafka.logs.dir="$logs" \
    -Dlog4j2.configurationFile="$home/log4j2.properties" \
    -cp "$libs/*" "$@"
}

answers() {
  # In secure mode as SCRAM user `admin` over SASL_SSL, trusting the local CA.
  KAFKA_LOCAL_SECURITY=$security KAFKA_LOCAL_CA=$tls_dir/ca.crt \
    KAFKA_LOCAL_ADMIN_PASSWORD=$admin_password "$python" - "$1" <<'PY' 2>/dev/null
import os
import sys
from kafka.admin import KafkaAdminClient
config = {}
if os.environ["KAFKA_LOCAL_SECURITY"] == "tls":
    config = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
              "sasl_plain_username": "admin",
              "sasl_plain_password": os.environ["KAFKA_LOCAL_ADMIN_PASSWORD"],
              "ssl_cafile": os.environ["KAFKA_LOCAL_CA"]}
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000, **config)
admin.list_topics()
admin.close()
PY
}

wait_ready() {
  # A listening port is not enough: wait until a metadata request succeeds.
  local deadline=$((SECONDS + ${KAFKA_LOCAL_START_TIMEOUT:-90}))
  until answers "$1"; do
    if (( SECONDS > deadline )); then
      log "broker at $1 did not answer a metadata request in time; see $logs/server.log"
      return 1
    fi
    if [[ -n ${2:-} ]] && ! kill -0 "$2" 2>/dev/null; then
      log "broker process exited; last lines of $logs/server.log:"
      tail -20 "$logs/server.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

up() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: using $KAFKA_BOOTSTRAP_SERVERS, starting nothing"
    wait_ready "$KAFKA_BOOTSTRAP_SERVERS"
    echo "$KAFKA_BOOTSTRAP_SERVERS"
    return
  fi
  if running; then
    wait_ready "$bootstrap" "$(cat "$pidfile")"
    log "already running (pid $(cat "$pidfile"))"
    echo "$bootstrap"
    return
  fi
  if answers "$bootstrap"; then
    # Another checkout's broker, say: a second one could not bind the port anyway.
    log "a broker not started from $home already answers on $bootstrap: using it"
    echo "$bootstrap"
    return
  fi
  fetch_jars
  write_config
  if [[ ! -f $data/meta.properties ]]; then
    local cluster_id
    cluster_id=$(java_cmd kafka.tools.StorageTool random-uuid)
    log "formatting storage in $data (cluster $cluster_id)"
    local extra=()
    if [[ $security == tls ]]; then mapfile -t extra < <(scram_args); fi
    java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$props" "${extra[@]}" \
      >"$logs/format.log" 2>&1 || { log "format failed:"; cat "$logs/format.log" >&2; exit 1; }
  fi
  log "starting broker on $bootstrap"
  # setsid: the broker outlives the shell (and make) that started it.
  setsid nohup java -Xms256m -Xmx1g -Dkafka.logs.dir="$logs" \
    -Dlog4j2.configurationFile="$home/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$props" >"$logs/stdout.log" 2>&1 </dev/null &
  echo $! > "$pidfile"
  wait_ready "$bootstrap" "$(cat "$pidfile")"
  log "ready"
  echo "$bootstrap"
}

down() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: not stopping an external cluster"
    return
  fi
  if ! running; then
    log "not running"
    rm -f "$pidfile"
    return
  fi
  local pid deadline
  pid=$(cat "$pidfile")
  log "stopping broker (pid $pid)"
  kill -TERM "$pid"
  deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS > deadline )); then log "still running after 60 s: SIGKILL"; kill -KILL "$pid"; fi
    sleep 0.2
  done
  rm -f "$pidfile"
  log "stopped"
}

# SIGKILL, as a crash would (chaos runs use it; `up` starts it again and KRaft recovers).
crash() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]] || ! running; then log "no local broker to kill"; exit 1; fi
  local pid
  pid=$(cat "$pidfile")
  log "killing broker (pid $pid) with SIGKILL"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  rm -f "$pidfile"
}

case ${1:-} in
  up) up ;;
  kill) crash ;;
  down) down ;;
  status) if running; then echo "running (pid $(cat "$pidfile")) on $bootstrap"; else echo "not running"; exit 1; fi ;;
  bootstrap) echo "${KAFKA_BOOTSTRAP_SERVERS:-$bootstrap}" ;;
  *) echo "usage: $0 up|down|kill|status|bootstrap" >&2; exit 2 ;;
esac
