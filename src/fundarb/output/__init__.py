"""What runs leave behind: report.json and plots, the backtest trade log, Monte Carlo outputs."""
