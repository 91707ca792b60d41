# bench/plot.gp: the benchmark chart, drawn by bench/bench.py as
#   gnuplot -e "datafile='...'; idlefile='...'; outfile='...'" bench/plot.gp
# datafile: one line per load scenario: name, req/s x4, p99 ms x4, CPU us/req
# x4 (targets direct fnproxy nginx haproxy; direct's CPU is the backend's).
# idlefile: one line per proxy: name, KiB per idle plain connection, KiB
# per idle TLS connection. TLS scenarios have no direct figure ("?").
set terminal pngcairo size 1400,1000 noenhanced font "sans,10"
set output outfile
set datafile missing "?"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set xtics font ",9"
set multiplot layout 2,2 title "fnproxy vs direct, nginx, HAProxy (medians; 127.0.0.1, 1 worker each; tls-*: TLS 1.3, no direct)"

set title "throughput (req/s, higher is better)"
set logscale y
set format y "%.0s%c"
plot datafile using 2:xtic(1) title "direct" lc rgb "#999999", \
     '' using 3 title "fnproxy" lc rgb "#d62728", \
     '' using 4 title "nginx" lc rgb "#2ca02c", \
     '' using 5 title "haproxy" lc rgb "#1f77b4"

set title "p99 latency (ms, lower is better)"
set format y "%g"
plot datafile using 6:xtic(1) title "direct" lc rgb "#999999", \
     '' using 7 title "fnproxy" lc rgb "#d62728", \
     '' using 8 title "nginx" lc rgb "#2ca02c", \
     '' using 9 title "haproxy" lc rgb "#1f77b4"

set title "CPU per request (us, log scale; direct = backend's own)"
plot datafile using 10:xtic(1) title "direct (backend)" lc rgb "#999999", \
     '' using 11 title "fnproxy" lc rgb "#d62728", \
     '' using 12 title "nginx" lc rgb "#2ca02c", \
     '' using 13 title "haproxy" lc rgb "#1f77b4"

set title "memory per idle keep-alive connection (KiB, lower is better)"
unset logscale y
set style data histograms
set style histogram clustered gap 1
set boxwidth 0.9
set yrange [0:*]
set key top left
# idlefile: target, KiB per idle plain connection, KiB per idle TLS
# connection; the proxies only (direct measures the backend, whose
# per-connection memory is of another scale).
plot idlefile using 2:xtic(1) title "plain" lc rgb "#7f7f7f", \
     '' using 3 title "TLS" lc rgb "#ff7f0e", \
     '' using ($0-0.2):2:(sprintf("%.2f", $2)) with labels offset 0,0.8 notitle, \
     '' using ($0+0.2):3:(sprintf("%.2f", $3)) with labels offset 0,0.8 notitle
unset multiplot
