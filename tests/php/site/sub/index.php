<?php
echo "sub index";
