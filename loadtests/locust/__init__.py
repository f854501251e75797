"""Load tests with locust: the scenarios (`locustfile`), their settings and step shape, and the
headless runner with its reports and SLO verdict (`python -m loadtests.locust`)."""
