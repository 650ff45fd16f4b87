"""The `fashionrec` command line as a .py file, for `spark-submit` (it runs only .py files):

SUBMIT=$(python -c 'import fashionrec.spark.submit as m; print(m.__file__)')
spark-submit --master yarn "$SUBMIT" ingest hdfs:///data/hm --out hdfs:///hm-ds --engine spark
"""

from fashionrec.cli import main

if __name__ == "__main__":
    main()
