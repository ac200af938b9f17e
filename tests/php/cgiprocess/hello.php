<?php
header("Status: 201 Created");
header("X-Greeting: hello");
echo "hello ", $_GET["name"] ?? "nobody", "\n";
