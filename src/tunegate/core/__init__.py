"""Pure tunegate logic. Nothing under ``tunegate.core`` may import Airflow (enforced by ruff TID251)."""
