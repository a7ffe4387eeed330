from ebbtide.demo.walkthrough import main

main()
