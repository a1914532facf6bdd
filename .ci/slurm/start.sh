#!/usr/bin/env bash
# Start a single-node Slurm cluster with accounting on this machine (for the Slurm tests).
# Installs Debian's Slurm 22.05, munge and MariaDB when missing; needs root. No systemd: every
# daemon is started here and stopped by stop.sh through its pid file.
#   bash .ci/slurm/start.sh        # then: sinfo, sbatch, sacct ...
set -euo pipefail
BASE=${GATEDRNN_SLURM_DIR:-/tmp/gatedrnn-slurm}
log() { echo "[slurm] $*"; }

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  log "installing munge, slurm and mariadb from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client slurmdbd mariadb-server >/dev/null
fi

mkdir -p "$BASE"/{state,spool,log,run}
host=$(hostname -s)

# --- munge (authentication) must run first
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge /var/log/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi

# --- MariaDB for accounting (without it sacct fails and submitit cannot learn job states)
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  mysql_install_db --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1
fi
if ! mariadb-admin ping >/dev/null 2>&1; then
  /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/gatedrnn-mariadb.pid >"$BASE/log/mariadb.log" 2>&1 &
  for _ in $(seq 100); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'gatedrnn'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

# --- configuration
mkdir -p /etc/slurm
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=gatedrnn
CONF
chmod 600 /etc/slurm/slurmdbd.conf
node=$(slurmd -C | head -n 1)
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=gatedrnn
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=batch_sched_delay=0
KillWait=5
MinJobAge=300
ReturnToService=2
MpiDefault=none
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF

# --- daemons
pidalive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
pidalive "$BASE/run/slurmdbd.pid" || slurmdbd
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
sacctmgr -i add cluster gatedrnn >/dev/null 2>&1 || true
pidalive "$BASE/run/slurmctld.pid" || slurmctld
pidalive "$BASE/run/slurmd.pid" || slurmd
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc" && break; sleep 0.2; done
scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
log "up: $(sinfo -h -o '%P %D %T %c CPUs' 2>/dev/null)"
