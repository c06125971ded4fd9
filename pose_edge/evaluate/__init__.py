"""COCO evaluation through pycocotools.

    scoring.py   COCOeval of keypoint and box results, results files, statistics by name
    boxes.py     person boxes for a top-down model evaluated without its detector (ground truth, detections file)
    split.py     the one path from a model on a data split to statistics, shared by every verb
"""
