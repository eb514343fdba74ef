"""MLflow: run tracking, pyfunc models, the model registry and promotion.

This package is the only place in inpnet that imports mlflow. Nothing is configured at
import time: callers pass the tracking URI they were given.
"""
