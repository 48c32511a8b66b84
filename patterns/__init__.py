"""Runtime patterns P1-P6 on the boundary (issue 3). Empty until then."""
