"""Price watch: stored catalog versions, price updates, alerts."""
