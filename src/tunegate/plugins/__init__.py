"""tunegate inside the Airflow API server: the nights' reports and their review, behind Airflow's own auth.

* :mod:`.plugin`: the ``AirflowPlugin`` (entry point ``airflow.plugins``); it mounts the app under
  :data:`~tunegate.plugins.urls.URL_PREFIX` and builds it only when the API server asks for it;
* :mod:`.app`: the FastAPI app (pages and JSON), every route authorized by Airflow's auth manager;
* :mod:`.nights`: which run directories and files a URL may reach (Airflow-free);
* :mod:`.pages`: the HTML (autoescaped templates, no script, nothing from the network);
* :mod:`.links`: the "tunegate report" extra link of ``GateOperator``; :mod:`.urls`: the URLs both use.

Importing this package imports nothing: the scheduler, the dag-processor and the workers load plugins too, and
only the API server needs FastAPI. docs/serving.md describes the pages, the permissions and the security choices.
"""
