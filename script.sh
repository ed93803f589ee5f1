cat > /work/main/sentinel.conf <<'EOF'
port 
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel monitor mymaster localhost  2
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 30000
sentinel parallel-syncs mymaster 1
EOF
exec redis-server /work/main/sentinel.conf --sentinel
