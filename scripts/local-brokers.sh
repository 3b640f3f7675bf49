#!/usr/bin/env bash
# Makes sure the local brokers the taps' tests use are up on loopback:
# RabbitMQ 5672 (with its management API on 15672), NATS with JetStream 4222,
# Redis 6379. A broker that is not installed is left alone (its tests say so);
# one that is installed but down is started. Safe to run again.
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port, name
	for _ in $(seq 1 60); do
		listening "$1" && return 0
		sleep 1
	done
	echo "brokers: $2 did not come up on 127.0.0.1:$1" >&2
	return 1
}

if command -v rabbitmq-server >/dev/null; then
	if ! listening 5672; then
		echo "brokers: starting RabbitMQ"
		if rabbitmqctl -q status >/dev/null 2>&1; then
			rabbitmqctl -q start_app # the node runs, its application was stopped
		else
			rabbitmq-server -detached
		fi
		wait_for 5672 RabbitMQ
	fi
	if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
		echo "brokers: enabling the RabbitMQ management plugin"
		rabbitmq-plugins enable rabbitmq_management >/dev/null
	fi
	wait_for 15672 "RabbitMQ management API"
fi

if command -v nats-server >/dev/null && ! listening 4222; then
	echo "brokers: starting NATS"
	mkdir -p /var/lib/nats-server
	start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
		-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
	wait_for 4222 NATS
fi

if command -v redis-server >/dev/null && ! listening 6379; then
	echo "brokers: starting Redis"
	redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	wait_for 6379 Redis
fi
