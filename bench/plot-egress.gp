# bench/plot-egress.gp: the egress chart, drawn by bench/bench.py as
#   gnuplot -e "datafile='...'; bulkfile='...'; outfile='...'" bench/plot-egress.gp
# datafile: one line per egress request scenario (egress-http,
# egress-connect-new): name, req/s x4, p99 ms x4, CPU us/req x4 (targets
# direct fnproxy squid tinyproxy; direct's CPU is the backend's).
# bulkfile: one line per target: name, MB/s through the tunnel, CPU us per
# MB (direct: the backend's). A missing figure is "?".
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
set multiplot layout 2,2 title "egress: fnproxy vs direct, Squid, tinyproxy (medians; 127.0.0.1, 1 worker each)"

set title "requests/s (higher is better)"
set logscale y
set format y "%.0s%c"
plot datafile using 2:xtic(1) title "direct" lc rgb "#999999", \
     '' using 3 title "fnproxy" lc rgb "#d62728", \
     '' using 4 title "squid" lc rgb "#9467bd", \
     '' using 5 title "tinyproxy" lc rgb "#8c564b"

set title "p99 latency (ms, lower is better)"
set format y "%g"
plot datafile using 6:xtic(1) title "direct" lc rgb "#999999", \
     '' using 7 title "fnproxy" lc rgb "#d62728", \
     '' using 8 title "squid" lc rgb "#9467bd", \
     '' using 9 title "tinyproxy" lc rgb "#8c564b"

set title "CPU per request (us, log scale; direct = backend's own)"
plot datafile using 10:xtic(1) title "direct (backend)" lc rgb "#999999", \
     '' using 11 title "fnproxy" lc rgb "#d62728", \
     '' using 12 title "squid" lc rgb "#9467bd", \
     '' using 13 title "tinyproxy" lc rgb "#8c564b"

set title "one CONNECT tunnel: MB/s (bars, left) and CPU us per MB (labels)"
unset logscale y
set yrange [0:*]
set key off
set style histogram clustered gap 1
plot bulkfile using 2:xtic(1) lc rgb "#d62728", \
     '' using ($0):2:(sprintf("%.0f MB/s\n%.0f us/MB", $2, $3)) with labels offset 0,1.5 notitle
unset multiplot
